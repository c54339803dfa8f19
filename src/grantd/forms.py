"""Form-encoded bodies (``application/x-www-form-urlencoded``), as both dialects that take them
read them: the OAuth 2.0 endpoints (``grantd.api.oauth2``) and the hosted pages' forms
(``grantd.web``); and, by the same rules, the query of the calls that carry their parameters
there (``grantd.api.neucron_v2``). Every parameter at most once and at most
``MAX_PARAMETER_LENGTH`` characters (RFC 6749 §3.1, §3.2), an empty value counting as absent; a
malformed body or query is ``InvalidRequest``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from grantd.core.errors import InvalidRequest

FORM = "application/x-www-form-urlencoded"
MAX_PARAMETER_LENGTH = 4096


def parse_form(content_type: str, body: bytes, repeatable: frozenset[str] = frozenset()) -> dict[str, str]:
    """A form body; every parameter at most once (RFC 6749 §3.2), an empty value counting as absent;
    but those named in ``repeatable`` (RFC 8707's ``resource``), whose values are joined by NUL."""
    if content_type.split(";")[0].strip().lower() != FORM:
        raise InvalidRequest(f"The body must be {FORM}.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(_MALFORMED_BODY) from None
    return _parameters(text, "body", _MALFORMED_BODY, repeatable)


def parse_query(query: bytes) -> dict[str, str]:
    """A URL's query (its raw bytes, as the ASGI scope holds them) read as a form is: every parameter
    at most once (RFC 6749 §3.1), an empty value counting as absent. For the calls that carry their
    parameters in the query (Neucron v2's GETs)."""
    try:
        text = query.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(_MALFORMED_QUERY) from None
    return _parameters(text, "query", _MALFORMED_QUERY)


_MALFORMED_BODY = "The body is not valid form encoding."
_MALFORMED_QUERY = "The query is not valid URL encoding."


def _parameters(text: str, where: str, malformed: str, repeatable: frozenset[str] = frozenset()) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise InvalidRequest(malformed) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:  # no parameter holds U+0000; PostgreSQL text cannot
            raise InvalidRequest(f"The {where} must not contain the NUL character (%00).")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise InvalidRequest(f"{name} is too long.")
        if name in form:
            if name not in repeatable:
                raise InvalidRequest(f"{name} is repeated.")
            if value != "":  # a repeatable parameter's values joined by NUL, which no value holds (above)
                form[name] += "\x00" + value
        elif value != "":
            form[name] = value
    return form


async def read_form(request: Request, repeatable: frozenset[str] = frozenset()) -> dict[str, str]:
    return parse_form(request.headers.get("content-type", ""), await request.body(), repeatable)
