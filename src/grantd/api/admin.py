"""The admin API, ``/v1/admin``, in the Neucron envelope: any account and any app, for the
accounts the operator marked as admins (``grantd users grant-admin``). Anyone else signed in gets
403 ``forbidden``. The rules are ``grantd.core.admin``'s, the same behind ``/admin`` and the
``grantd users`` and ``grantd apps`` commands."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.apps import AppData, app_data
from grantd.api.audit import parse_rfc3339
from grantd.api.deps import context, current_user, peer_address
from grantd.api.envelope import envelope
from grantd.api.wire import NO_NUL, rfc3339
from grantd.core import admin
from grantd.core.accounts import Principal
from grantd.core.context import Context

Ctx = Annotated[Context, Depends(context)]
Address = Annotated[str | None, Depends(peer_address)]
UserId = Annotated[str, Path(max_length=36), NO_NUL]
AppId = Annotated[str, Path(max_length=255), NO_NUL]
Moment = Annotated[
    str | None, Query(max_length=64, description="An RFC 3339 date-time, such as 2024-07-09T22:02:52Z (inclusive)."), NO_NUL
]
Cursor = Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page."), NO_NUL]
Limit = Annotated[int | None, Query(ge=1, le=admin.LIMIT_MAX, description=f"At most this many (default {admin.LIMIT_DEFAULT}).")]


async def admin_user(ctx: Ctx, user: Annotated[Principal, Depends(current_user)]) -> str:
    """The signed-in admin's user id; 403 ``forbidden`` for any other account."""
    await admin.require_admin(ctx, user.user_id)
    return user.user_id


Admin = Annotated[str, Depends(admin_user)]


class AdminUserData(BaseModel):
    user_id: str
    email: str
    created_at: str
    email_verified: bool
    locked: bool
    locked_at: str | None
    is_admin: bool


class AdminUserList(BaseModel):
    users: list[AdminUserData]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: this is the last.")


class SessionData(BaseModel):
    jti: str
    issued_at: str
    expires_at: str


class SessionList(BaseModel):
    sessions: list[SessionData]


class RevokedSessions(BaseModel):
    user_id: str
    sessions_revoked: int


class DeletedUser(BaseModel):
    user_id: str
    deleted: bool


class ResetSent(BaseModel):
    user_id: str
    password_reset_sent: bool


class AdminAppData(AppData):
    owner_id: str
    owner_email: str


class AdminAppList(BaseModel):
    apps: list[AdminAppData]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: this is the last.")


def user_data(user: admin.User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "email": user.email,
        "created_at": rfc3339(user.created_at),
        "email_verified": user.email_verified_at is not None,
        "locked": user.locked_at is not None,
        "locked_at": rfc3339(user.locked_at),
        "is_admin": user.is_admin,
    }


def session_data(session: admin.Session) -> dict[str, Any]:
    return {"jti": session.jti, "issued_at": rfc3339(session.issued_at), "expires_at": rfc3339(session.expires_at)}


def admin_app_data(found: admin.AdminApp) -> dict[str, Any]:
    return {**app_data(found.app), "owner_id": found.owner_id, "owner_email": found.owner_email}


def moment(value: str | None, name: str) -> int | None:
    return None if value is None else parse_rfc3339(value, name)


async def list_users(
    who: Admin,
    ctx: Ctx,
    email: Annotated[str | None, Query(max_length=320, description="A part of the email address."), NO_NUL] = None,
    created_after: Moment = None,
    created_before: Moment = None,
    locked: Annotated[bool | None, Query(description="true: only locked accounts; false: only the others.")] = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Response:
    filters = admin.UserFilter(
        email, moment(created_after, "created_after"), moment(created_before, "created_before"), locked
    )
    page = await admin.list_users(ctx, filters, cursor, limit)
    return envelope({"users": [user_data(user) for user in page.items], "next_cursor": page.next_cursor})


async def get_user(user_id: UserId, who: Admin, ctx: Ctx) -> Response:
    return envelope(user_data(await admin.get_user(ctx, user_id)))


async def lock_user(user_id: UserId, who: Admin, ctx: Ctx, address: Address) -> Response:
    return envelope(user_data(await admin.lock(ctx, who, user_id, address=address)))


async def unlock_user(user_id: UserId, who: Admin, ctx: Ctx, address: Address) -> Response:
    return envelope(user_data(await admin.unlock(ctx, who, user_id, address=address)))


async def delete_user(user_id: UserId, who: Admin, ctx: Ctx, address: Address) -> Response:
    await admin.delete_user(ctx, who, user_id, address=address)
    return envelope({"user_id": user_id, "deleted": True})


async def reset_password(user_id: UserId, who: Admin, ctx: Ctx, address: Address) -> Response:
    await admin.send_password_reset(ctx, who, user_id, address=address)
    return envelope({"user_id": user_id, "password_reset_sent": True})


async def list_sessions(user_id: UserId, who: Admin, ctx: Ctx) -> Response:
    return envelope({"sessions": [session_data(s) for s in await admin.sessions(ctx, user_id)]})


async def revoke_sessions(user_id: UserId, who: Admin, ctx: Ctx, address: Address) -> Response:
    ended = await admin.revoke_sessions(ctx, who, user_id, address=address)
    return envelope({"user_id": user_id, "sessions_revoked": ended})


async def list_apps(
    who: Admin,
    ctx: Ctx,
    owner: Annotated[str | None, Query(max_length=320, description="The owner's email address."), NO_NUL] = None,
    name: Annotated[str | None, Query(max_length=200, description="A part of the app's name."), NO_NUL] = None,
    disabled: Annotated[bool | None, Query(description="true: only disabled apps; false: only the others.")] = None,
    created_after: Moment = None,
    created_before: Moment = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Response:
    filters = admin.AppFilter(
        owner, name, disabled, moment(created_after, "created_after"), moment(created_before, "created_before")
    )
    page = await admin.list_apps(ctx, filters, cursor, limit)
    return envelope({"apps": [admin_app_data(found) for found in page.items], "next_cursor": page.next_cursor})


async def get_app(app_id: AppId, who: Admin, ctx: Ctx) -> Response:
    return envelope(admin_app_data(await admin.get_app(ctx, app_id)))


async def disable_app(app_id: AppId, who: Admin, ctx: Ctx, address: Address) -> Response:
    return envelope(admin_app_data(await admin.disable_app(ctx, who, app_id, address=address)))


async def enable_app(app_id: AppId, who: Admin, ctx: Ctx, address: Address) -> Response:
    return envelope(admin_app_data(await admin.enable_app(ctx, who, app_id, address=address)))
