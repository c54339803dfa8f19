"""Operating accounts and apps: what an admin (an account the operator marked with ``grantd users
grant-admin``) does through ``/v1/admin`` and ``/admin``, and the operator through ``grantd users``
and ``grantd apps``.

Every change is audited with who did it as the actor (the admin's user id, or ``operator`` for the
command line) and the account or app it was done to. The rules:

- lock: the account cannot sign in (``accounts.refuse_locked``), and its sessions end, and with
  them every token issued for it and its unredeemed codes. Unlock gives back signing in only.
- delete: the account and everything it owns (sessions, grants, tokens, apps) are gone.
- reset-password: the user gets the password-reset link by email; no one else learns a password.
- revoke-sessions: every session of the account ends, and the OpenID grants bound to them.
- enable (an app): it works again; no token from before it was disabled comes back.

Lists are pages, newest first, with an opaque cursor to the next one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from grantd.core import accounts, audit, leaving
from grantd.core.apps import App, _app
from grantd.core.context import Context
from grantd.core.errors import Forbidden, InvalidRequest, NotFound
from grantd.store import admin as store, tokens as token_store, users as user_store
from grantd.store.apps import SELF_REGISTERED

LIMIT_DEFAULT = 50
LIMIT_MAX = 200


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    created_at: int
    email_verified_at: int | None
    locked_at: int | None
    is_admin: bool


@dataclass(frozen=True, slots=True)
class Session:
    jti: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class AdminApp:
    app: App
    owner_id: str
    owner_email: str


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class UserFilter:
    email: str | None = None
    created_after: int | None = None
    created_before: int | None = None
    locked: bool | None = None


@dataclass(frozen=True, slots=True)
class AppFilter:
    owner: str | None = None  # the owner's email
    name: str | None = None
    disabled: bool | None = None
    created_after: int | None = None
    created_before: int | None = None
    self_registered: bool = False  # only the apps no developer owns


def _user(row: Any) -> User:
    return User(row.id, row.email, row.created_at, row.email_verified_at, row.locked_at, bool(row.is_admin))


def encode_cursor(created_at: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The (created_at, id) a cursor stands for; InvalidRequest(field="cursor") when it is not one."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, row_id = text.partition(":")
        if not row_id or len(row_id) > 255 or not created_at.isdigit():
            raise ValueError
        return int(created_at), row_id
    except ValueError:
        raise InvalidRequest("cursor is not one this server gave.", field="cursor") from None


def _limit(limit: int | None) -> int:
    if limit is None:
        return LIMIT_DEFAULT
    if not 1 <= limit <= LIMIT_MAX:
        raise InvalidRequest(f"limit must be between 1 and {LIMIT_MAX}.", field="limit")
    return limit


def _page(rows: list[Any], limit: int, item: Any) -> Page:
    items = [item(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return Page(items, encode_cursor(last.created_at, last.id) if last is not None else None)


# ---------------------------------------------------------------- who is an admin


async def require_admin(ctx: Context, user_id: str) -> None:
    """Forbidden unless the account is an admin (and not locked)."""
    async with ctx.db.read() as conn:
        if not await store.is_admin(conn, user_id):
            raise Forbidden("Only an admin may do this.")


async def is_admin(ctx: Context, user_id: str) -> bool:
    async with ctx.db.read() as conn:
        return await store.is_admin(conn, user_id)


# ---------------------------------------------------------------- accounts


async def list_users(ctx: Context, filters: UserFilter, cursor: str | None = None, limit: int | None = None) -> Page:
    count = _limit(limit)
    async with ctx.db.read() as conn:
        rows = await store.users_page(
            conn, email=(filters.email or "").strip().lower() or None, created_after=filters.created_after,
            created_before=filters.created_before, locked=filters.locked, cursor=decode_cursor(cursor), limit=count + 1,
        )
    return _page(list(rows), count, _user)


async def get_user(ctx: Context, user_id: str) -> User:
    async with ctx.db.read() as conn:
        row = await store.user(conn, user_id)
    if row is None:
        raise NotFound("No such account.")
    return _user(row)


async def user_by_email(ctx: Context, email: str) -> User:
    """The account of ``email`` (the command line names accounts by address); NotFound."""
    async with ctx.db.read() as conn:
        row = await user_store.by_email(conn, accounts.normalize_email(email))
    if row is None or row.id == SELF_REGISTERED:
        raise NotFound(f"No user with email {email}.")
    return _user(row)


async def _end_everything(tx: Any, user_id: str, now: int, until: int) -> int:
    """End every session of the user, every token issued for them (their families denied until
    ``until``: now + access_token_ttl) and their unredeemed codes."""
    ended = await user_store.revoke_other_sessions(tx, user_id, "", now)
    await store.void_codes(tx, now, user_id=user_id)
    await token_store.revoke_user(tx, user_id, now, until)
    return ended


async def lock(ctx: Context, actor: str, user_id: str, *, address: str | None = None) -> User:
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await store.user(tx, user_id)
        if row is None:
            raise NotFound("No such account.")
        if row.locked_at is None:
            await store.set_locked(tx, user_id, now)
            await audit.record(ctx, tx, "user_locked", actor=actor, user_id=user_id, address=address, now=now)
        # Ended again on a second lock too: nothing of a locked account may be live.
        await _end_everything(tx, user_id, now, now + ctx.settings.access_token_ttl)
        return _user(await store.user(tx, user_id))


async def unlock(ctx: Context, actor: str, user_id: str, *, address: str | None = None) -> User:
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await store.user(tx, user_id)
        if row is None:
            raise NotFound("No such account.")
        if row.locked_at is not None:
            await store.set_locked(tx, user_id, None)
            await audit.record(ctx, tx, "user_unlocked", actor=actor, user_id=user_id, address=address, now=now)
        return _user(await store.user(tx, user_id))


async def delete_user(ctx: Context, actor: str, user_id: str, *, address: str | None = None) -> None:
    """Delete an account as its owner can (``core.leaving.delete_account``: every session, grant
    and token ended, its apps disabled and handed over, its personal rows gone, the audit events
    about it kept), audited as ``user_deleted`` with the admin (or the operator) as actor."""
    if user_id == actor:
        raise InvalidRequest("An admin cannot delete their own account here.")
    await leaving.delete_account(ctx, user_id, actor, address=address, event="user_deleted")


async def send_password_reset(ctx: Context, actor: str, user_id: str, *, address: str | None = None) -> User:
    """Mail the user the password-reset link, as "Forgot your password?" does."""
    user = await get_user(ctx, user_id)
    await accounts.request_password_reset(ctx, user.email, address=address, actor=actor)
    return user


async def sessions(ctx: Context, user_id: str) -> list[Session]:
    await get_user(ctx, user_id)
    async with ctx.db.read() as conn:
        rows = await store.live_sessions(conn, user_id, ctx.now())
    return [Session(row.jti, row.issued_at, row.expires_at) for row in rows]


async def revoke_sessions(ctx: Context, actor: str, user_id: str, *, address: str | None = None) -> int:
    """End every session of the user, and the OpenID grants bound to them; how many ended."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        if await store.user(tx, user_id) is None:
            raise NotFound("No such account.")
        ended = await user_store.revoke_other_sessions(tx, user_id, "", now)
        await token_store.revoke_session_families(tx, user_id, now, now + ctx.settings.access_token_ttl)
        await audit.record(ctx, tx, "sessions_revoked", actor=actor, user_id=user_id, address=address, now=now)
    return ended


async def set_admin(ctx: Context, actor: str, user_id: str, admin: bool, *, address: str | None = None) -> User:
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await store.user(tx, user_id)
        if row is None:
            raise NotFound("No such account.")
        if bool(row.is_admin) != admin:
            await store.set_admin(tx, user_id, admin)
            event = "admin_granted" if admin else "admin_revoked"
            await audit.record(ctx, tx, event, actor=actor, user_id=user_id, address=address, now=now)
        return _user(await store.user(tx, user_id))


# ---------------------------------------------------------------- apps


def _admin_app(row: Any) -> AdminApp:
    return AdminApp(_app(row), row.owner_id, row.owner_email)


async def list_apps(ctx: Context, filters: AppFilter, cursor: str | None = None, limit: int | None = None) -> Page:
    count = _limit(limit)
    owner_id = SELF_REGISTERED if filters.self_registered else None
    if filters.owner:
        owner_id = (await user_by_email(ctx, filters.owner)).user_id
    async with ctx.db.read() as conn:
        rows = await store.apps_page(
            conn, owner_id=owner_id, name=(filters.name or "").strip() or None, disabled=filters.disabled,
            created_after=filters.created_after, created_before=filters.created_before,
            cursor=decode_cursor(cursor), limit=count + 1,
        )
    return _page(list(rows), count, _admin_app)


async def get_app(ctx: Context, app_id: str) -> AdminApp:
    async with ctx.db.read() as conn:
        rows = await store.apps_page(
            conn, owner_id=None, name=None, disabled=None, created_after=None, created_before=None, cursor=None,
            limit=1, app_id=app_id,
        )
    if not rows:
        raise NotFound("App not found.")
    return _admin_app(rows[0])


async def disable_app(ctx: Context, actor: str, app_id: str, *, address: str | None = None) -> AdminApp:
    from grantd.core import apps

    await apps.disable(ctx, None, app_id, address=address, actor=actor)
    return await get_app(ctx, app_id)


async def enable_app(ctx: Context, actor: str, app_id: str, *, address: str | None = None) -> AdminApp:
    now = ctx.now()
    async with ctx.db.write() as tx:
        rows = await store.apps_page(
            tx, owner_id=None, name=None, disabled=None, created_after=None, created_before=None, cursor=None,
            limit=1, app_id=app_id,
        )
        if not rows:
            raise NotFound("App not found.")
        if rows[0].disabled_at is not None:
            await store.void_codes(tx, now, app_id=app_id)
            await token_store.revoke_app(tx, app_id, now)
            await store.enable_app(tx, app_id, now)
            await audit.record(
                ctx, tx, "app_enabled", actor=actor, user_id=rows[0].owner_id, app_id=app_id, address=address, now=now
            )
    return await get_app(ctx, app_id)
