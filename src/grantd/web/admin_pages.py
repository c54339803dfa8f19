"""The admin pages: any account and any app, for the accounts the operator marked as admins
(``grantd users grant-admin``), in the same session as the console. Anyone else signed in gets a
403 page. Every action is a POST form with the session's CSRF token; the rules are
``grantd.core.admin``'s, the same behind ``/v1/admin`` and the command line.

- ``GET  /admin``                              accounts: filters (email, created, locked), pages
- ``GET  /admin/users/{id}``                   one account, its sessions, and the actions
- ``POST /admin/users/{id}/{action}``          lock, unlock, delete, reset-password, revoke-sessions
- ``GET  /admin/apps``                         apps: filters (owner, name, disabled), pages
- ``POST /admin/apps/{id}/{action}``           disable, enable
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import Response

from grantd.api.audit import parse_rfc3339
from grantd.core import admin
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest, NotFound
from grantd.web.console import _posted, _signed_in
from grantd.web import pages

ADMIN = "/admin"
_USER_ACTIONS = ("lock", "unlock", "delete", "reset-password", "revoke-sessions")
_APP_ACTIONS = ("disable", "enable")


def _ctx(request: Request) -> Context:
    return request.app.state.ctx


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _refused() -> Response:
    return pages.error_page(403, "Admins only", "This page is for the admins of this service.", link=("/", "Home"))


async def _admin(request: Request, principal: Principal) -> Response | None:
    """None when the signed-in user is an admin; else the 403 page."""
    if await admin.is_admin(_ctx(request), principal.user_id):
        return None
    return _refused()


async def _admin_signed_in(request: Request) -> Principal | Response:
    """The admin who asks for a page (the console's check: a session), or the page to answer
    instead (to sign in, 403 for anyone not an admin)."""
    principal = await _signed_in(request)
    if isinstance(principal, Response):
        return principal
    refused = await _admin(request, principal)
    return principal if refused is None else refused


async def _admin_posted(request: Request, back: str) -> Any:
    """An admin's form post (the console's checks: a session, its CSRF token): (the admin, the
    form), or the page to answer instead (to sign in, 403 for anyone not an admin)."""
    posted = await _posted(request, back)
    if isinstance(posted, Response):
        return posted
    refused = await _admin(request, posted[0])
    return posted if refused is None else refused


def _render(ctx: Context, principal: Principal, template: str, status_code: int = 200, **values: Any) -> Response:
    return pages.user_page(ctx, principal, template, "admin", status_code, **values)


def _day(value: str, name: str, end: bool) -> int | None:
    """A date field (2026-12-02) as the first (or last) second of that day, UTC."""
    value = value.strip()
    if not value:
        return None
    return parse_rfc3339(f"{value}T{'23:59:59' if end else '00:00:00'}Z", name)


def _choice(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


async def users_page(request: Request) -> Response:
    principal = await _admin_signed_in(request)
    if isinstance(principal, Response):
        return principal
    ctx = _ctx(request)
    query = request.query_params
    form = {name: query.get(name, "")[:320] for name in ("email", "created_after", "created_before", "locked")}
    error = None
    try:
        filters = admin.UserFilter(
            form["email"] or None, _day(form["created_after"], "created_after", False),
            _day(form["created_before"], "created_before", True), _choice(form["locked"]),
        )
        page = await admin.list_users(ctx, filters, query.get("cursor") or None)
    except InvalidRequest as exc:
        error, page = exc.message, admin.Page([], None)
    next_link = None
    if page.next_cursor:
        next_link = ADMIN + "?" + urlencode({**{k: v for k, v in form.items() if v}, "cursor": page.next_cursor})
    return _render(
        ctx, principal, "admin_users.html", 400 if error else 200, users=page.items, form=form, error=error,
        next_link=next_link,
    )


async def user_page(request: Request, user_id: str) -> Response:
    principal = await _admin_signed_in(request)
    if isinstance(principal, Response):
        return principal
    ctx = _ctx(request)
    try:
        user = await admin.get_user(ctx, user_id)
        sessions = await admin.sessions(ctx, user_id)
    except NotFound:
        return pages.error_page(404, "Account not found", "There is no such account.", link=(ADMIN, "Accounts"))
    return _render(
        ctx, principal, "admin_user.html", user=user, sessions=sessions, done=request.query_params.get("done"),
        is_self=user_id == principal.user_id,
    )


async def user_action(request: Request, user_id: str, action: str) -> Response:
    back = f"{ADMIN}/users/{user_id}"
    posted = await _admin_posted(request, back)
    if isinstance(posted, Response):
        return posted
    principal, form = posted
    if action not in _USER_ACTIONS:
        return pages.error_page(404, "Not found", "There is no such action.", link=(ADMIN, "Accounts"))
    ctx, actor, address = _ctx(request), principal.user_id, _address(request)
    try:
        if action == "lock":
            await admin.lock(ctx, actor, user_id, address=address)
        elif action == "unlock":
            await admin.unlock(ctx, actor, user_id, address=address)
        elif action == "reset-password":
            await admin.send_password_reset(ctx, actor, user_id, address=address)
        elif action == "revoke-sessions":
            await admin.revoke_sessions(ctx, actor, user_id, address=address)
        else:
            if form.one("confirm") != "yes":
                raise InvalidRequest("Tick the box to confirm: deleting an account cannot be undone.")
            await admin.delete_user(ctx, actor, user_id, address=address)
            return pages.redirect(ADMIN + "?deleted=1")
    except NotFound:
        return pages.error_page(404, "Account not found", "There is no such account.", link=(ADMIN, "Accounts"))
    except GrantdError as exc:
        if exc.status_code >= 500:
            raise
        return pages.error_page(exc.status_code, "This cannot be done", exc.message, link=(back, "Back to the account"))
    return pages.redirect(f"{back}?done={action}")


async def apps_page(request: Request) -> Response:
    principal = await _admin_signed_in(request)
    if isinstance(principal, Response):
        return principal
    ctx = _ctx(request)
    query = request.query_params
    form = {name: query.get(name, "")[:320] for name in ("owner", "name", "disabled")}
    error = None
    try:
        filters = admin.AppFilter(form["owner"] or None, form["name"] or None, _choice(form["disabled"]))
        page = await admin.list_apps(ctx, filters, query.get("cursor") or None)
    except (InvalidRequest, NotFound) as exc:
        error, page = exc.message, admin.Page([], None)
    next_link = None
    if page.next_cursor:
        next_link = f"{ADMIN}/apps?" + urlencode({**{k: v for k, v in form.items() if v}, "cursor": page.next_cursor})
    return _render(
        ctx, principal, "admin_apps.html", 400 if error else 200, apps=page.items, form=form, error=error,
        next_link=next_link,
    )


async def app_action(request: Request, app_id: str, action: str) -> Response:
    back = f"{ADMIN}/apps"
    posted = await _admin_posted(request, back)
    if isinstance(posted, Response):
        return posted
    principal, _ = posted
    if action not in _APP_ACTIONS:
        return pages.error_page(404, "Not found", "There is no such action.", link=(back, "Apps"))
    ctx = _ctx(request)
    change = admin.disable_app if action == "disable" else admin.enable_app
    try:
        await change(ctx, principal.user_id, app_id, address=_address(request))
    except NotFound:
        return pages.error_page(404, "App not found", "There is no such app.", link=(back, "Apps"))
    return pages.redirect(back)
