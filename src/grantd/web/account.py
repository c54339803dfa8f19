"""The signed-in user's own pages: the account (email, profile, password change) and connected apps.

Like ``grantd.web.routes`` a dialect: it parses forms and cookies, calls ``grantd.core.accounts``
and ``grantd.core.consents``, and renders a page or a 303 redirect (POST, then redirect, then GET).
Every form posts its session's ``csrf_token``; a form without a session goes to the sign-in page.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import JSONResponse, Response

from grantd.core import accounts, consents, email_address, leaving, passkeys, profile, second_factor
from grantd.core import permissions as perms
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import Conflict, GrantdError, InvalidGrant, InvalidRequest, NotFound, RateLimited
from grantd.forms import read_form
from grantd.web import session
from grantd.web.pages import PASSKEY_SCRIPTS, error_page, page, redirect, security_headers, to_signin, user_page, wait_time

_FORGED = (
    "The form was not sent from this site, or it has expired. "
    "Go back, reload the page and try again."
)
_APP_ID_MAX = 64
_PASSKEY_NOTICES = {
    "added": "Your passkey was added. You can sign in with it now.",
    "renamed": "Your passkey was renamed.",
    "removed": "Your passkey was removed: it no longer signs you in.",
}


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _posted(request: Request, page: tuple[str, str]) -> tuple[Context, Principal, dict[str, str]] | Response:
    """A form posted from ``page`` (its path and title): the context, the signed-in user and the
    form; or the answer when there is no session (to sign in, then back to the page) or the form's
    CSRF token is not the session's (403)."""
    ctx = _ctx(request)
    form = await read_form(request)  # a malformed form raises; render_error answers with the error page
    principal = await session.current(ctx, request)
    if principal is None:
        return redirect(f"/signin?next={page[0]}")
    if not session.check_session_csrf(ctx, principal, form.get("csrf_token")):
        return error_page(403, "This form cannot be accepted", _FORGED, link=page)
    return ctx, principal, form


# ---------------------------------------------------------------- account


async def _account_page(
    ctx: Context,
    principal: Principal,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    notice: str | None = None,
    entered: dict[str, str] | None = None,
    profile_errors: dict[str, str] | None = None,
    new_email: str = "",
    email_errors: dict[str, str] | None = None,
    email_message: str | None = None,
    export_errors: dict[str, str] | None = None,
    export_message: str | None = None,
    delete_errors: dict[str, str] | None = None,
    delete_message: str | None = None,
    passkey_message: str | None = None,
) -> Response:
    """``entered``: the profile form as sent, shown again beside ``profile_errors``; ``new_email``:
    the email change form's address as sent, beside ``email_errors`` and ``email_message``."""
    person = await profile.profile_of(ctx, principal.user_id)
    return user_page(
        ctx,
        principal,
        "account.html",
        "account",
        status_code,
        email=person.email,
        email_verified=person.email_verified,
        pending_email=await email_address.pending_change(ctx, principal.user_id),
        new_email=new_email,
        email_errors=email_errors or {},
        email_message=email_message,
        profile=entered if entered is not None else {k: v or "" for k, v in person.fields().items()},
        avatar=person.avatar,
        profile_hints=profile.RULES,
        profile_errors=profile_errors or {},
        errors=errors or {},
        message=message,
        notice=notice,
        password_hint=accounts.password_rule(ctx.settings.password_min_length),
        export_errors=export_errors or {},
        export_message=export_message,
        delete_errors=delete_errors or {},
        delete_message=delete_message,
        owned_apps=await leaving.owned_apps(ctx, principal.user_id),
        second_factor=second_factor.TOTP in await second_factor.methods_of(ctx, principal.user_id),
        passkey_asked=second_factor.PASSKEY in await second_factor.asked_after_password(ctx, principal.user_id),
        passkeys=await passkeys.list_passkeys(ctx, principal.user_id),
        passkey_message=passkey_message,
        passkey_name_max=passkeys.NAME_MAX,
        passkeys_available=passkeys.available(ctx),
        **(PASSKEY_SCRIPTS if passkeys.available(ctx) else {}),
    )


async def account(request: Request) -> Response:
    ctx = _ctx(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return to_signin(request)
    notice = None
    if request.query_params.get("changed") == "1":
        notice = "Your password was changed. Every other session of yours was signed out."
    elif request.query_params.get("saved") == "1":
        notice = "Your profile was saved."
    elif request.query_params.get("sent") == "1":
        notice = "We sent a new link to your email address. Open it to verify the address."
    elif request.query_params.get("passkey") in _PASSKEY_NOTICES:
        notice = _PASSKEY_NOTICES[request.query_params["passkey"]]
    elif request.query_params.get("sent") == "new":
        notice = f"{email_address.CHANGE_SENT} Until then, your address stays as it is."
    return await _account_page(ctx, principal, notice=notice)


async def update_profile(request: Request) -> Response:
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    # Every field of the form is sent: an empty one clears the field.
    entered = {name: form.get(name) or "" for name in profile.FIELDS}
    try:
        await profile.update(ctx, principal, entered, address=_address(request))
    except InvalidRequest as exc:
        text = exc.message[:1].upper() + exc.message[1:]
        field_errors = {exc.field or "": text}
        return await _account_page(ctx, principal, status_code=400, entered=entered, profile_errors=field_errors)
    except Conflict as exc:
        field_errors = {"user_name": exc.message}
        return await _account_page(ctx, principal, status_code=409, entered=entered, profile_errors=field_errors)
    return redirect("/account?saved=1")


async def change_password(request: Request) -> Response:
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    current, new = form.get("current_password") or "", form.get("new_password") or ""
    errors = {}
    if not current:
        errors["current_password"] = "Enter your current password."
    if not new:
        errors["new_password"] = "Choose a new password."
    if errors:
        return await _account_page(ctx, principal, status_code=400, errors=errors)
    try:
        await accounts.change_password(ctx, principal, current, new, address=_address(request))
    except RateLimited as exc:
        return await _limited(ctx, principal, exc, message=f"Too many wrong passwords. Try again in {wait_time(exc.retry_after)}.")
    except InvalidGrant as exc:
        return await _account_page(ctx, principal, status_code=400, errors={"current_password": exc.message})
    except InvalidRequest as exc:
        text = exc.message[:1].upper() + exc.message[1:]
        if exc.field == "password":
            return await _account_page(ctx, principal, status_code=400, errors={"new_password": text})
        return await _account_page(ctx, principal, status_code=400, message=text)
    return redirect("/account?changed=1")


async def _limited(ctx: Context, principal: Principal, exc: RateLimited, **fields: object) -> Response:
    """The account page, 429, with ``Retry-After`` and ``fields`` (the message saying so)."""
    response = await _account_page(ctx, principal, status_code=429, **fields)  # type: ignore[arg-type]
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _too_many(exc: RateLimited) -> str:
    return f"Too many links were sent. Try again in {wait_time(exc.retry_after)}."


async def send_verification(request: Request) -> Response:
    """"Send the link again": a new verification link to the account's address."""
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, _ = posted
    try:
        await email_address.send_verification_again(ctx, principal.user_id, address=_address(request))
    except RateLimited as exc:
        return await _limited(ctx, principal, exc, notice=_too_many(exc))
    return redirect("/account?sent=1")


async def change_email(request: Request) -> Response:
    """A new address, proven by the current password: a link goes to it (``accounts.request_email_change``)."""
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    new_email, password = (form.get("new_email") or "")[:320], form.get("email_password") or ""
    errors = {}
    if not new_email:
        errors["new_email"] = "Enter the new email address."
    if not password:
        errors["email_password"] = "Enter your current password."
    if errors:
        return await _account_page(ctx, principal, status_code=400, new_email=new_email, email_errors=errors)
    try:
        changing = await accounts.request_email_change(
            ctx, principal, new_email, current_password=password, address=_address(request)
        )
    except RateLimited as exc:
        return await _limited(ctx, principal, exc, new_email=new_email, email_message=_too_many(exc))
    except InvalidGrant as exc:
        return await _account_page(
            ctx, principal, status_code=400, new_email=new_email, email_errors={"email_password": exc.message}
        )
    except InvalidRequest as exc:
        text = exc.message[:1].upper() + exc.message[1:]
        return await _account_page(ctx, principal, status_code=400, new_email=new_email, email_errors={"new_email": text})
    if not changing:
        errors = {"new_email": "This is your email address already."}
        return await _account_page(ctx, principal, status_code=400, new_email=new_email, email_errors=errors)
    return redirect("/account?sent=new")


# ---------------------------------------------------------------- leaving


def _download(data: dict[str, object]) -> Response:
    response = JSONResponse(data, headers=security_headers((), (), ()))
    response.headers["Content-Disposition"] = 'attachment; filename="grantd-account.json"'
    return response


async def export_data(request: Request) -> Response:
    """GET: the account's data as a JSON download, for a session signed in within
    ``accounts.FRESH_SIGN_IN`` seconds; an older one is sent to the account page's form, which asks
    for the password (POST)."""
    ctx = _ctx(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return to_signin(request)
    if ctx.now() - principal.issued_at > accounts.FRESH_SIGN_IN:
        return redirect("/account#export_password")
    return _download(await leaving.export(ctx, principal.user_id, address=_address(request)))


async def export_data_with_password(request: Request) -> Response:
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    password = form.get("export_password") or ""
    if not password:
        return await _account_page(ctx, principal, status_code=400, export_errors={"export_password": "Enter your password."})
    row = await accounts._account(ctx, principal)
    try:
        await accounts._check_current_password(ctx, principal, row, password, _address(request))
    except RateLimited as exc:
        return await _limited(ctx, principal, exc, export_message=f"Too many wrong passwords. Try again in {wait_time(exc.retry_after)}.")
    except InvalidGrant as exc:
        return await _account_page(ctx, principal, status_code=400, export_errors={"export_password": exc.message})
    return _download(await leaving.export(ctx, principal.user_id, address=_address(request)))


async def delete_account(request: Request) -> Response:
    """Delete the account (``leaving.delete_own_account``): the password, and DELETE typed."""
    posted = await _posted(request, ("/account", "Account"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, form = posted
    password, confirmation = form.get("delete_password") or "", (form.get("confirmation") or "")[:64]
    if not password:
        return await _account_page(ctx, principal, status_code=400, delete_errors={"delete_password": "Enter your password."})
    try:
        disabled = await leaving.delete_own_account(ctx, principal, password, confirmation, address=_address(request))
    except RateLimited as exc:
        return await _limited(ctx, principal, exc, delete_message=f"Too many wrong passwords. Try again in {wait_time(exc.retry_after)}.")
    except InvalidGrant as exc:
        return await _account_page(ctx, principal, status_code=400, delete_errors={"delete_password": exc.message})
    except InvalidRequest as exc:
        return await _account_page(ctx, principal, status_code=400, delete_errors={exc.field or "confirmation": exc.message})
    response = page("account_deleted.html", disabled=len(disabled))
    session.clear_session(ctx, response)
    return response


# ---------------------------------------------------------------- connected apps


async def connected_apps(request: Request) -> Response:
    ctx = _ctx(request)
    principal = await session.current(ctx, request)
    if principal is None:
        return to_signin(request)
    describe = ctx.catalog.describe
    items = [
        {
            "app_id": grant.app_id,
            "app_name": grant.app_name,
            "permissions": [(name, describe(name)) for name in perms.parse(grant.permissions)],
            "granted_at": grant.created_at,
            "last_used_at": grant.last_used_at,
        }
        for grant in await consents.list_grants(ctx, principal)
    ]
    revoked = request.query_params.get("revoked") == "1"
    notice = "Access revoked: the app's tokens no longer work." if revoked else None
    return user_page(ctx, principal, "apps.html", "apps", grants=items, notice=notice)


async def revoke(request: Request, app_id: str) -> Response:
    posted = await _posted(request, ("/account/apps", "Connected apps"))
    if isinstance(posted, Response):
        return posted
    ctx, principal, _ = posted
    try:
        if len(app_id) > _APP_ID_MAX or "\x00" in app_id:  # no app id is like this; never look it up
            raise NotFound("You have not granted this app access.")
        await consents.revoke_grant(ctx, principal, app_id, address=_address(request))
    except NotFound as exc:
        return error_page(404, "Nothing to revoke", exc.message, link=("/account/apps", "Connected apps"))
    except GrantdError as exc:
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return error_page(status, "The access cannot be revoked", exc.message, link=("/account/apps", "Connected apps"))
    return redirect("/account/apps?revoked=1")
