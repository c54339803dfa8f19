"""Form-encoded bodies (``application/x-www-form-urlencoded``), as both dialects that take them
read them: the OAuth 2.0 endpoints (``grantd.api.oauth2``) and the hosted pages' forms
(``grantd.web``). Every parameter at most once and at most ``MAX_PARAMETER_LENGTH`` characters
(RFC 6749 §3.1, §3.2), an empty value counting as absent; a malformed body is ``InvalidRequest``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from grantd.core.errors import InvalidRequest

FORM = "application/x-www-form-urlencoded"
MAX_PARAMETER_LENGTH = 4096


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """A form body; every parameter at most once (RFC 6749 §3.2), an empty value counting as absent."""
    if content_type.split(";")[0].strip().lower() != FORM:
        raise InvalidRequest(f"The body must be {FORM}.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The body is not valid form encoding.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:  # no parameter holds U+0000; PostgreSQL text cannot
            raise InvalidRequest("The body must not contain the NUL character (%00).")
        if name in form:
            raise InvalidRequest(f"{name} is repeated.")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise InvalidRequest(f"{name} is too long.")
        if value != "":
            form[name] = value
    return form


async def read_form(request: Request) -> dict[str, str]:
    return parse_form(request.headers.get("content-type", ""), await request.body())
