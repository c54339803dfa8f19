"""The browser session and CSRF protection of the hosted pages.

- The session cookie ``grantd_session`` holds a user token from ``accounts.log_in``:
  revocable, validated by ``accounts.authenticate`` on every request.
- A page with a session carries ``csrf_token`` = HMAC-SHA256(csrf key, session jti).
- The sign-in form (no session yet) uses a double-submit cookie ``grantd_csrf``:
  a random value whose HMAC must equal the form's ``csrf_token``.

The CSRF key is derived from the master secret and used for nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from starlette.requests import Request
from starlette.responses import Response

from grantd.core import accounts, notices
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import InvalidToken

SESSION_COOKIE = "grantd_session"
CSRF_COOKIE = "grantd_csrf"
_CSRF_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_.-]{1,8192}$")
_EXPIRED = "Expires=Thu, 01 Jan 1970 00:00:00 GMT"


def _csrf_key(ctx: Context) -> bytes:
    return hmac.new(ctx.settings.master_secret, b"grantd csrf v1", hashlib.sha256).digest()


def _mac(ctx: Context, purpose: bytes, value: str) -> str:
    digest = hmac.new(_csrf_key(ctx), purpose + b"\x00" + value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _equal(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------- the session


async def current(ctx: Context, request: Request) -> Principal | None:
    """The signed-in user of the session cookie; None without a live one."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or not _TOKEN_CHARS.match(token):
        return None
    try:
        return await accounts.authenticate(ctx, token)
    except InvalidToken:
        return None


def _flags(ctx: Context) -> str:
    secure = "; Secure" if ctx.settings.issuer.startswith("https://") else ""
    return f"Path=/; HttpOnly; SameSite=Lax{secure}"


def set_session(ctx: Context, response: Response, token: accounts.UserToken) -> None:
    max_age = max(token.expires_at - ctx.now(), 0)
    response.headers.append("set-cookie", f"{SESSION_COOKIE}={token.access_token}; Max-Age={max_age}; {_flags(ctx)}")


async def signed_in_from_here(
    ctx: Context, request: Request, response: Response, user_id: str, *, notify: bool = True
) -> None:
    """A sign-in (``notify``: not a sign-up) of ``user_id`` from this browser: its device cookie
    (``notices.DEVICE_COOKIE``, made here when it has none) is remembered for the account, and a
    browser the account had not seen gets the account a notice (``notices.signed_in_from``)."""
    device = request.cookies.get(notices.DEVICE_COOKIE)
    if not device or not _CSRF_COOKIE_VALUE.match(device):
        device = notices.new_device_cookie()
    address = request.client.host if request.client else None
    await notices.signed_in_from(ctx, user_id, device, address=address, notify=notify)
    response.headers.append(
        "set-cookie", f"{notices.DEVICE_COOKIE}={device}; Max-Age={notices.DEVICE_COOKIE_MAX_AGE}; {_flags(ctx)}"
    )


def clear_session(ctx: Context, response: Response) -> None:
    response.headers.append("set-cookie", f"{SESSION_COOKIE}=; Max-Age=0; {_EXPIRED}; {_flags(ctx)}")


def session_csrf(ctx: Context, principal: Principal) -> str:
    return _mac(ctx, b"session", principal.jti)


def check_session_csrf(ctx: Context, principal: Principal, given: str | None) -> bool:
    return _equal(session_csrf(ctx, principal), given)


# ---------------------------------------------------------------- the sign-in form (no session yet)


def signin_cookie(request: Request) -> str:
    """The double-submit cookie value: the browser's own when it has a well-formed one, else a new one."""
    value = request.cookies.get(CSRF_COOKIE)
    return value if value and _CSRF_COOKIE_VALUE.match(value) else secrets.token_urlsafe(32)


def signin_csrf(ctx: Context, cookie_value: str) -> str:
    return _mac(ctx, b"signin", cookie_value)


def check_signin_csrf(ctx: Context, request: Request, given: str | None) -> bool:
    value = request.cookies.get(CSRF_COOKIE)
    if not value or not _CSRF_COOKIE_VALUE.match(value):
        return False
    return _equal(signin_csrf(ctx, value), given)


def set_signin_cookie(ctx: Context, response: Response, cookie_value: str) -> None:
    response.headers.append("set-cookie", f"{CSRF_COOKIE}={cookie_value}; {_flags(ctx)}")
