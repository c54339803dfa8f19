from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from collections.abc import Sequence

from sqlalchemy import delete as delete_
from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from grantd.store.db import fetch_one, later_of
from grantd.store.prepared import Prepared
from grantd.store.schema import apps, authorization_codes, device_codes, grants, refresh_tokens

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_OF = Prepared(select(grants).where(grants.c.user_id == bindparam("user_id"), grants.c.app_id == bindparam("app_id")))


async def of(conn: AsyncConnection, user_id: str, app_id: str) -> Row | None:
    """Read on every authorization request."""
    return await fetch_one(conn, _OF, user_id=user_id, app_id=app_id)


class Grant(NamedTuple):
    id: str
    permissions: str


# The live app (as store.apps.live reads it) and the user's grant to it, LEFT JOINed: one row.
_LIVE_APP_AND_GRANT = Prepared(
    select(apps, grants.c.id.label("grant_id"), grants.c.permissions.label("grant_permissions"))
    .select_from(apps.outerjoin(grants, and_(grants.c.app_id == apps.c.id, grants.c.user_id == bindparam("user_id"))))
    .where(apps.c.id == bindparam("app_id"), apps.c.disabled_at.is_(None))
)


async def live_app_and_grant(conn: AsyncConnection, app_id: str, user_id: str) -> tuple[Any, Grant | None]:
    """What ``store.apps.live`` and ``of`` read, in one SELECT (one round trip): the live app (None
    when unknown or disabled; its row carries two more columns) and the user's grant to it."""
    row = await fetch_one(conn, _LIVE_APP_AND_GRANT, app_id=app_id, user_id=user_id)
    if row is None:
        return None, None
    return row, (None if row.grant_id is None else Grant(row.grant_id, row.grant_permissions))


async def insert_if_absent(
    conn: AsyncConnection, *, grant_id: str, user_id: str, app_id: str, permissions: str, now: int
) -> bool:
    """False when the user already has a grant for the app."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(grants).values(
                    id=grant_id, user_id=user_id, app_id=app_id, permissions=permissions, created_at=now, updated_at=now
                )
            )
    except IntegrityError:
        return False
    return True


async def set_permissions(conn: AsyncConnection, grant_id: str, permissions: str, now: int) -> None:
    await conn.execute(update(grants).where(grants.c.id == grant_id).values(permissions=permissions, updated_at=now))


async def of_user(conn: AsyncConnection, user_id: str) -> Sequence[Row]:
    """The user's grants with each app's name and when its tokens were last issued: the newest of
    its refresh tokens' issue (a rotation issues one), of its codes' redemption, of its device
    codes' redemption, and the grant's ``last_used_at`` (what pruning folded in). Access tokens
    have no row and no write of their own; a refresh of an app that keeps its refresh tokens
    updates none of these, so it shows the refresh token's issue."""
    newest_refresh = (
        select(refresh_tokens.c.app_id, func.max(refresh_tokens.c.issued_at).label("at"))
        .where(refresh_tokens.c.user_id == user_id)
        .group_by(refresh_tokens.c.app_id)
        .subquery("newest_refresh")
    )
    newest_code = (
        select(authorization_codes.c.app_id, func.max(authorization_codes.c.redeemed_at).label("at"))
        .where(authorization_codes.c.user_id == user_id)
        .group_by(authorization_codes.c.app_id)
        .subquery("newest_code")
    )
    newest_device = (
        select(device_codes.c.app_id, func.max(device_codes.c.redeemed_at).label("at"))
        .where(device_codes.c.user_id == user_id)
        .group_by(device_codes.c.app_id)
        .subquery("newest_device")
    )
    last_used = later_of(
        later_of(newest_refresh.c.at, newest_code.c.at), later_of(newest_device.c.at, grants.c.last_used_at)
    ).label("last_used_at")
    query = (
        select(*(c for c in grants.c if c.name != "last_used_at"), apps.c.name.label("app_name"), last_used)
        .join(apps, apps.c.id == grants.c.app_id)
        .outerjoin(newest_refresh, newest_refresh.c.app_id == grants.c.app_id)
        .outerjoin(newest_code, newest_code.c.app_id == grants.c.app_id)
        .outerjoin(newest_device, newest_device.c.app_id == grants.c.app_id)
        .where(grants.c.user_id == user_id)
        .order_by(grants.c.created_at, grants.c.app_id)
    )
    return (await conn.execute(query)).all()


async def delete(conn: AsyncConnection, user_id: str, app_id: str) -> bool:
    """False when there was no such grant."""
    result = await conn.execute(delete_(grants).where(grants.c.user_id == user_id, grants.c.app_id == app_id))
    return result.rowcount == 1
