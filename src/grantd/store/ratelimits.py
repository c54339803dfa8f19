"""The rate limiter's counters: one atomic upsert per counted attempt.

``INSERT … ON CONFLICT (key) DO UPDATE … RETURNING count`` runs on SQLite ≥ 3.35 and
PostgreSQL alike: concurrent attempts on any number of processes each get their own
count, and a row whose window has passed starts again at 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Sequence

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import sqlite

from grantd.store.schema import rate_limits

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def add(conn: AsyncConnection, key: str, window_start: int, delta: int = 1) -> int:
    """Count ``delta`` attempts in the window starting at ``window_start``; the window's new total."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect  # its import loads every PostgreSQL driver module
    else:
        dialect = sqlite  # type: ignore[assignment]
    stmt = dialect.insert(rate_limits).values(key=key, window_start=window_start, count=max(delta, 0))
    current = rate_limits.c.window_start >= stmt.excluded.window_start
    stmt = stmt.on_conflict_do_update(
        index_elements=[rate_limits.c.key],
        set_={
            "count": case((current, rate_limits.c.count + delta), else_=stmt.excluded["count"]),
            "window_start": case((current, rate_limits.c.window_start), else_=stmt.excluded.window_start),
        },
    ).returning(rate_limits.c.count)
    return int((await conn.execute(stmt)).scalar_one())


async def refund(conn: AsyncConnection, key: str, window_start: int) -> None:
    """Take back one attempt counted in that window (a success that must not use up the budget)."""
    await conn.execute(
        update(rate_limits)
        .where(rate_limits.c.key == key, rate_limits.c.window_start == window_start, rate_limits.c.count > 0)
        .values(count=rate_limits.c.count - 1)
    )


async def counts(conn: AsyncConnection, keys: Sequence[str], window_start: int) -> dict[str, int]:
    """The attempts counted in that window, by key (absent: none)."""
    rows = await conn.execute(
        select(rate_limits.c.key, rate_limits.c.count).where(
            rate_limits.c.key.in_(list(keys)), rate_limits.c.window_start == window_start
        )
    )
    return {row.key: int(row.count) for row in rows}


async def prune(conn: AsyncConnection, before: int) -> int:
    """Delete counters whose window started before ``before``; how many."""
    result = await conn.execute(delete(rate_limits).where(rate_limits.c.window_start < before))
    return result.rowcount or 0
