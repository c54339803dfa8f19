"""A person's profile: its rules, reading it, changing it, and who a token lets read it.

The rules of every field are here, once: the Neucron v2 calls (``PUT /auth/user/update``) and the
account page both apply ``validate``. Every field is optional; an empty string clears one. Every
change sets ``updated_at`` (OpenID Connect's ``updated_at`` claim will be read from here) and is
audited as ``profile_updated`` with the names of the fields changed, never their values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from grantd.core import access_token, accounts, audit, introspection
from grantd.core.context import Context
from grantd.core.errors import Conflict, InvalidRequest, InvalidToken
from grantd.store import users as store

FIELDS = ("first_name", "last_name", "user_name", "avatar", "phone_number", "language")
NAME_MAX = 100
AVATAR_MAX = 2048
LANGUAGE_MAX = 35  # RFC 5646 §4.4.1: 35 characters hold any tag worth keeping
USER_NAME = re.compile(r"[A-Za-z0-9._-]{3,32}")
PHONE = re.compile(r"\+[0-9]{7,15}")
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_PHONE_SEPARATORS = str.maketrans("", "", " -.()")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")
# Bidirectional embeddings, overrides and isolates: format characters that reorder what a reader sees.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")

# In words, for a form's hints and the error messages.
RULES = {
    "first_name": f"At most {NAME_MAX} characters.",
    "last_name": f"At most {NAME_MAX} characters.",
    "user_name": "3 to 32 letters, digits, '.', '_' or '-'; unique, whatever the case.",
    "avatar": "An https:// address of an image, at most 2048 characters.",
    "phone_number": "+ then the country code and number: 7 to 15 digits, e.g. +14155550123.",
    "language": "A language tag such as en or pt-BR.",
}


@dataclass(frozen=True, slots=True)
class Profile:
    """What ``GET /auth/user/info`` and the account page show: None is a field not set."""

    id: str
    email: str
    first_name: str | None
    last_name: str | None
    user_name: str | None
    avatar: str | None
    phone_number: str | None
    language: str | None
    updated_at: int | None
    # Whether ``email`` was proven by a link sent to it (OpenID Connect's ``email_verified`` claim).
    email_verified: bool = False

    @property
    def full_name(self) -> str | None:
        return " ".join(name for name in (self.first_name, self.last_name) if name) or None

    def fields(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in FIELDS}


# ---------------------------------------------------------------- the rules


def _no_control_characters(field: str, value: str) -> None:
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI_CONTROLS:
            raise InvalidRequest(f"{field} may not contain control characters.", field=field)


def _name(field: str, value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if len(value) > NAME_MAX:
        raise InvalidRequest(f"{field} is too long: at most {NAME_MAX} characters.", field=field)
    return value


def _user_name(value: str) -> str:
    if not USER_NAME.fullmatch(value):
        raise InvalidRequest("user_name must be 3 to 32 letters, digits, '.', '_' or '-'.", field="user_name")
    return value


def _phone_number(value: str) -> str:
    number = value.translate(_PHONE_SEPARATORS)
    if not PHONE.fullmatch(number):
        raise InvalidRequest(
            "phone_number must be + then the country code and number: 7 to 15 digits.", field="phone_number"
        )
    return number


def _language(value: str) -> str:
    if len(value) > LANGUAGE_MAX or not LANGUAGE.fullmatch(value):
        raise InvalidRequest("language must be a language tag such as en or pt-BR.", field="language")
    return value


def _avatar(value: str) -> str:
    """An absolute https URL a page may show: ASCII, no white space, no user info, a host name."""
    refused = InvalidRequest("avatar must be an https:// address, at most 2048 characters.", field="avatar")
    if len(value) > AVATAR_MAX or not value.isascii() or any(ch.isspace() or ch in "\\<>\"'`" for ch in value):
        raise refused
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port that is not a number raises
    except ValueError:
        raise refused from None
    if parts.scheme != "https" or not value.startswith("https://"):
        raise refused
    if "@" in parts.netloc or not parts.hostname or not _HOST.fullmatch(parts.hostname):
        raise InvalidRequest("avatar must name a host, without a user name or password.", field="avatar")
    return value


_RULES = {
    "first_name": lambda value: _name("first_name", value),
    "last_name": lambda value: _name("last_name", value),
    "user_name": _user_name,
    "avatar": _avatar,
    "phone_number": _phone_number,
    "language": _language,
}


def validate(changes: Mapping[str, Any]) -> dict[str, str | None]:
    """The profile fields of ``changes``, checked and normalized: surrounding white space is
    trimmed, and an empty value is None (the field cleared). Other keys are ignored, and so is a
    field given as None (left as it is). InvalidRequest(field=...) for the first field refused."""
    valid: dict[str, str | None] = {}
    for field in FIELDS:
        value = changes.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"{field} must be a string.", field=field)
        _no_control_characters(field, value)
        value = value.strip()
        valid[field] = _RULES[field](value) if value else None
    return valid


# ---------------------------------------------------------------- use cases


def _profile(row: Any) -> Profile:
    return Profile(
        row.id, row.email, row.first_name, row.last_name, row.user_name, row.avatar, row.phone_number,
        row.language, row.updated_at, row.email_verified_at is not None,
    )


async def profile_of(ctx: Context, user_id: str) -> Profile:
    """InvalidToken when the account no longer exists (its token outlived it)."""
    async with ctx.db.read() as conn:
        row = await store.by_id(conn, user_id)
    if row is None:
        raise InvalidToken("The account no longer exists.")
    return _profile(row)


async def update(
    ctx: Context, user: accounts.Principal, changes: Mapping[str, Any], *, address: str | None = None
) -> tuple[str, ...]:
    """Change the profile fields of ``changes`` (``validate``'s rules); the names of those that
    changed. Conflict when the user name is another account's, whatever its case."""
    valid = validate(changes)
    current = (await profile_of(ctx, user.user_id)).fields()
    changed = {name: value for name, value in valid.items() if value != current[name]}
    if not changed:
        return ()
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.set_profile(tx, user.user_id, changed, now):
            raise Conflict("This user name is taken.")
        fields = sorted(changed)
        await audit.record(
            ctx, tx, "profile_updated", actor=user.user_id, user_id=user.user_id, address=address, now=now, fields=fields
        )
    return tuple(fields)


async def holder_of(ctx: Context, token: str) -> str:
    """The user whose profile ``token`` may read: a user token's (``accounts.authenticate``), or
    the user an access token grantd issued to an app acts for (``introspection.live_user_claims``)."""
    if access_token.claims_of(ctx, token) is None:
        return (await accounts.authenticate(ctx, token)).user_id
    return (await introspection.live_user_claims(ctx, token))["user_id"]
