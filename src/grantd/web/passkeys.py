"""Passkeys on the hosted pages: the JSON endpoints ``/static/passkeys.js`` calls, and the
account page's rename and remove forms.

- ``POST /account/passkeys/options`` and ``POST /account/passkeys``: a new passkey for the
  signed-in user (the options of ``navigator.credentials.create``, then its answer).
- ``POST /passkeys/signin/options`` and ``POST /passkeys/signin``: signing in with a passkey
  (the options of ``navigator.credentials.get``, then its answer), which makes the session a
  password sign-in makes.

Every request is a form carrying ``csrf_token`` as the page's other forms do (the session's on
the account page, the pre-session cookie's on the sign-in page). The JSON answers are
``{"redirect": path}`` on success and ``{"error": message}`` with a 4xx otherwise.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import Request
from starlette.responses import JSONResponse, Response

from grantd.core import accounts, passkeys
from grantd.core.errors import GrantdError, InsufficientUserAuthentication, InvalidGrant, NotFound, RateLimited
from grantd.forms import read_form
from grantd.web import session
from grantd.web.account import _account_page, _address, _ctx, _posted
from grantd.web.pages import NO_STORE, redirect, safe_next, wait_time

_JSON_HEADERS = {**NO_STORE, "X-Content-Type-Options": "nosniff"}
_FORGED = "The request was not sent from this site, or the page has expired. Reload the page and try again."


def _json(status: int, body: dict[str, object] | str) -> Response:
    if isinstance(body, str):  # options, JSON already
        return Response(body, status, media_type="application/json", headers=_JSON_HEADERS)
    return JSONResponse(body, status, headers=_JSON_HEADERS)


def _error(exc: GrantdError) -> Response:
    if isinstance(exc, RateLimited):
        response = _json(429, {"error": f"Too many attempts. Try again in {wait_time(exc.retry_after)}."})
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    status = exc.status_code if 400 <= exc.status_code < 500 else 400
    return _json(status, {"error": exc.message})


# ---------------------------------------------------------------- the account page


async def _signed_in(request: Request):  # type: ignore[no-untyped-def]
    ctx = _ctx(request)
    form = await read_form(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return _json(401, {"error": "Sign in again.", "redirect": "/signin?next=/account"})
    if not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
        return _json(403, {"error": _FORGED})
    return ctx, principal, form


async def registration_options(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if isinstance(signed_in, Response):
        return signed_in
    ctx, principal, _ = signed_in
    return _json(200, await passkeys.registration_options(ctx, principal))


async def register(request: Request) -> Response:
    signed_in = await _signed_in(request)
    if isinstance(signed_in, Response):
        return signed_in
    ctx, principal, form = signed_in
    try:
        await passkeys.register(
            ctx, principal, form.get("credential") or "", form.get("name") or "", address=_address(request)
        )
    except GrantdError as exc:
        return _error(exc)
    return _json(200, {"redirect": "/account?passkey=added#passkeys"})


async def rename(request: Request, credential_id: str) -> Response:
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    try:
        await passkeys.rename(ctx, principal, credential_id, form.get("name") or "")
    except GrantdError as exc:
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return await _account_page(ctx, principal, status_code=status, passkey_message=exc.message)
    return redirect("/account?passkey=renamed#passkeys")


async def remove(request: Request, credential_id: str) -> Response:
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    try:
        await passkeys.remove(ctx, principal, credential_id, password=form.get("password") or None, address=_address(request))
    except RateLimited as exc:
        page = await _account_page(
            ctx, principal, status_code=429, passkey_message=f"Too many wrong passwords. Try again in {wait_time(exc.retry_after)}."
        )
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    except InsufficientUserAuthentication:
        message = "Enter your password to remove a passkey."
        return await _account_page(ctx, principal, status_code=400, passkey_message=message)
    except (InvalidGrant, NotFound) as exc:
        return await _account_page(ctx, principal, status_code=exc.status_code if exc.status_code < 500 else 400, passkey_message=exc.message)
    return redirect("/account?passkey=removed#passkeys")


# ---------------------------------------------------------------- the sign-in page


async def _signin_form(request: Request):  # type: ignore[no-untyped-def]
    ctx = _ctx(request)
    form = await read_form(request)
    if not session.check_signin_csrf(ctx, request, form.get("csrf_token")):
        return _json(403, {"error": _FORGED})
    # check_signin_csrf has just accepted the browser's pre-session cookie: the ceremony is bound to it
    return ctx, request.cookies[session.CSRF_COOKIE], form


async def sign_in_options(request: Request) -> Response:
    started = await _signin_form(request)
    if isinstance(started, Response):
        return started
    ctx, binding, _ = started
    return _json(200, await passkeys.sign_in_options(ctx, binding))


async def sign_in(request: Request) -> Response:
    started = await _signin_form(request)
    if isinstance(started, Response):
        return started
    ctx, binding, form = started
    try:
        token = await passkeys.log_in(ctx, form.get("credential") or "", binding, address=_address(request))
    except GrantdError as exc:
        return _error(exc)
    previous = await session.current(ctx, request)
    if previous is not None and previous.jti != token.jti:  # as a password sign-in: the old session gives way
        await accounts.replace_session(ctx, previous, token)
    response = _json(200, {"redirect": safe_next(form.get("next"))})
    session.set_session(ctx, response, token)
    await session.signed_in_from_here(ctx, request, response, token.user_id)
    return response


# ---------------------------------------------------------------- the script

_SCRIPT = (files("grantd.web") / "static" / "passkeys.js").read_bytes()


async def script() -> Response:
    return Response(
        _SCRIPT,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
