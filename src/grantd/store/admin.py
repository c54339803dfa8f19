"""What the admin pages, API and commands read and write about any account and any app.

Lists are pages in keyset order, newest first: (``created_at``, ``id``) descending, the next page
starting after the last row of this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Row

from grantd.store.apps import SELF_REGISTERED
from grantd.store.schema import apps, authorization_codes, user_sessions, users

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


def _after(table: Any, cursor: tuple[int, str] | None) -> list[Any]:
    if cursor is None:
        return []
    created_at, row_id = cursor
    return [or_(table.c.created_at < created_at, and_(table.c.created_at == created_at, table.c.id < row_id))]


async def users_page(
    conn: AsyncConnection,
    *,
    email: str | None,
    created_after: int | None,
    created_before: int | None,
    locked: bool | None,
    cursor: tuple[int, str] | None,
    limit: int,
) -> Sequence[Row]:
    """Up to ``limit`` accounts after ``cursor`` (the reserved owner of self-registered apps is
    not one). ``email``: a part of the address (lower case); the times are inclusive bounds."""
    where = [users.c.id != SELF_REGISTERED, *_after(users, cursor)]
    if email:
        where.append(users.c.email.contains(email, autoescape=True))
    if created_after is not None:
        where.append(users.c.created_at >= created_after)
    if created_before is not None:
        where.append(users.c.created_at <= created_before)
    if locked is not None:
        where.append(users.c.locked_at.isnot(None) if locked else users.c.locked_at.is_(None))
    query = select(users).where(*where).order_by(users.c.created_at.desc(), users.c.id.desc()).limit(limit)
    return (await conn.execute(query)).all()


async def user(conn: AsyncConnection, user_id: str) -> Row | None:
    if user_id == SELF_REGISTERED:
        return None
    return (await conn.execute(select(users).where(users.c.id == user_id))).first()


async def set_locked(conn: AsyncConnection, user_id: str, locked_at: int | None) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(locked_at=locked_at))


async def set_admin(conn: AsyncConnection, user_id: str, is_admin: bool) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(is_admin=is_admin))


async def is_admin(conn: AsyncConnection, user_id: str) -> bool:
    row = (await conn.execute(select(users.c.is_admin, users.c.locked_at).where(users.c.id == user_id))).first()
    return row is not None and bool(row.is_admin) and row.locked_at is None


async def live_sessions(conn: AsyncConnection, user_id: str, now: int) -> Sequence[Row]:
    """The user's sessions that are neither revoked nor expired, newest first."""
    return (
        await conn.execute(
            select(user_sessions)
            .where(user_sessions.c.user_id == user_id, user_sessions.c.revoked_at.is_(None), user_sessions.c.expires_at > now)
            .order_by(user_sessions.c.issued_at.desc(), user_sessions.c.jti)
        )
    ).all()


async def void_codes(conn: AsyncConnection, now: int, *, user_id: str | None = None, app_id: str | None = None) -> None:
    """Spend the unredeemed authorization codes of a user, or of an app."""
    column = authorization_codes.c.user_id if user_id is not None else authorization_codes.c.app_id
    await conn.execute(
        update(authorization_codes)
        .where(column == (user_id if user_id is not None else app_id), authorization_codes.c.redeemed_at.is_(None))
        .values(redeemed_at=now)
    )


async def apps_page(
    conn: AsyncConnection,
    *,
    owner_id: str | None,
    name: str | None,
    disabled: bool | None,
    created_after: int | None,
    created_before: int | None,
    cursor: tuple[int, str] | None,
    limit: int,
    app_id: str | None = None,
) -> Sequence[Row]:
    """Up to ``limit`` apps after ``cursor``, each with its owner's email (``owner_email``);
    ``app_id``: only that one."""
    where = _after(apps, cursor)
    if app_id is not None:
        where.append(apps.c.id == app_id)
    if owner_id is not None:
        where.append(apps.c.owner_id == owner_id)
    if name:
        where.append(apps.c.name.contains(name, autoescape=True))
    if disabled is not None:
        where.append(apps.c.disabled_at.isnot(None) if disabled else apps.c.disabled_at.is_(None))
    if created_after is not None:
        where.append(apps.c.created_at >= created_after)
    if created_before is not None:
        where.append(apps.c.created_at <= created_before)
    query = (
        select(apps, users.c.email.label("owner_email"))
        .join(users, users.c.id == apps.c.owner_id)
        .where(*where)
        .order_by(apps.c.created_at.desc(), apps.c.id.desc())
        .limit(limit)
    )
    return (await conn.execute(query)).all()


async def enable_app(conn: AsyncConnection, app_id: str, now: int) -> None:
    await conn.execute(update(apps).where(apps.c.id == app_id).values(disabled_at=None, updated_at=now))
