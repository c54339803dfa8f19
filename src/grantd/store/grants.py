from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from grantd.store.schema import grants


async def of(conn: AsyncConnection, user_id: str, app_id: str) -> Row | None:
    query = select(grants).where(grants.c.user_id == user_id, grants.c.app_id == app_id)
    return (await conn.execute(query)).first()


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
