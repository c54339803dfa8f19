"""The statements of pushed authorization requests (RFC 9126): ``core.par`` holds the rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from grantd.store.schema import pushed_authorization_requests as par

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_request(
    conn: AsyncConnection, *, request_hash: str, app_id: str, parameters: str, now: int, expires_at: int
) -> None:
    await conn.execute(
        insert(par).values(
            request_hash=request_hash, app_id=app_id, parameters=parameters, created_at=now, expires_at=expires_at
        )
    )


async def live_request(conn: AsyncConnection, request_hash: str, app_id: str, now: int) -> Row | None:
    """The request, if it is the app's, unspent and unexpired."""
    query = select(par).where(
        par.c.request_hash == request_hash,
        par.c.app_id == app_id,
        par.c.spent_at.is_(None),
        par.c.expires_at > now,
    )
    return (await conn.execute(query)).first()


async def open_request(conn: AsyncConnection, request_hash: str, now: int, expires_at: int) -> None:
    """Record the request's first arrival at the authorization endpoint, and its new end: the
    browser's time to sign in and consent."""
    await conn.execute(
        update(par)
        .where(par.c.request_hash == request_hash, par.c.opened_at.is_(None), par.c.expires_at > now)
        .values(opened_at=now, expires_at=expires_at)
    )


async def spend_request(conn: AsyncConnection, request_hash: str, now: int) -> bool:
    """Mark the request spent, if still unspent and unexpired: one UPDATE, so of two uses at once
    exactly one succeeds."""
    result = await conn.execute(
        update(par)
        .where(par.c.request_hash == request_hash, par.c.spent_at.is_(None), par.c.expires_at > now)
        .values(spent_at=now)
    )
    return result.rowcount == 1
