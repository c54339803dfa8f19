"""The rate limiter's counters: one atomic upsert per counted attempt.

``INSERT … ON CONFLICT (key) DO UPDATE … RETURNING`` runs on SQLite ≥ 3.35 and PostgreSQL
alike: concurrent attempts on any number of processes each get their own count. A row holds the
current window's count and the previous window's; when an attempt opens a new window, the count
of the window it ended moves to ``previous_count`` (or 0, if a whole window passed without one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from collections.abc import Sequence

from sqlalchemy import case, delete, literal, select, update

from grantd.store.db import upsert
from grantd.store.schema import rate_limits

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


class Counts(NamedTuple):
    """The attempts of a bucket in the window starting at ``window_start`` and in the one before."""

    current: int
    previous: int


async def add(
    conn: AsyncConnection, key: str, window_start: int, window: int, delta: int = 1, floor: int = 0
) -> Counts:
    """Count ``delta`` attempts in the ``window``-second window starting at ``window_start``; that
    window's new total, and the previous window's. ``floor``: attempts known to have been counted
    in that window elsewhere (in Redis, before it failed): the count goes on from the higher of the
    two."""
    stmt = upsert(conn, rate_limits).values(
        key=key, window_start=window_start, count=max(floor, 0) + max(delta, 0), previous_count=0
    )
    new_start = stmt.excluded.window_start
    current = rate_limits.c.window_start >= new_start
    # The row's window ends where the new one starts: its count is now the previous window's.
    adjacent = rate_limits.c.window_start == new_start - literal(window)
    if floor > 0:
        counted = case((current & (rate_limits.c.count >= floor), rate_limits.c.count + delta), else_=stmt.excluded["count"])
    else:
        counted = case((current, rate_limits.c.count + delta), else_=stmt.excluded["count"])
    stmt = stmt.on_conflict_do_update(
        index_elements=[rate_limits.c.key],
        set_={
            "count": counted,
            "previous_count": case(
                (current, rate_limits.c.previous_count), (adjacent, rate_limits.c.count), else_=0
            ),
            "window_start": case((current, rate_limits.c.window_start), else_=new_start),
        },
    ).returning(rate_limits.c.count, rate_limits.c.previous_count)
    row = (await conn.execute(stmt)).one()
    return Counts(int(row[0]), int(row[1]))


async def refund(conn: AsyncConnection, key: str, window_start: int) -> None:
    """Take back one attempt counted in that window (a success that must not use up the budget)."""
    await conn.execute(
        update(rate_limits)
        .where(rate_limits.c.key == key, rate_limits.c.window_start == window_start, rate_limits.c.count > 0)
        .values(count=rate_limits.c.count - 1)
    )


async def counts(conn: AsyncConnection, keys: Sequence[str], window_start: int, window: int) -> dict[str, Counts]:
    """The attempts counted in the ``window``-second window starting at ``window_start`` and in the
    one before, by key (absent: none in either)."""
    rows = await conn.execute(
        select(rate_limits.c.key, rate_limits.c.window_start, rate_limits.c.count, rate_limits.c.previous_count).where(
            rate_limits.c.key.in_(list(keys)), rate_limits.c.window_start >= window_start - window
        )
    )
    found = {}
    for row in rows:
        if row.window_start >= window_start:
            found[row.key] = Counts(int(row.count), int(row.previous_count))
        else:  # the row's window is the previous one: nothing counted in this one yet
            found[row.key] = Counts(0, int(row.count))
    return found


async def prune(conn: AsyncConnection, before: int) -> int:
    """Delete counters whose window started before ``before``; how many."""
    result = await conn.execute(delete(rate_limits).where(rate_limits.c.window_start < before))
    return result.rowcount or 0
