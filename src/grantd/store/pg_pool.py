"""grantd's pool of asyncpg connections (``Pool``), kept because it costs less CPU than asyncpg's own.

Measured 2026-12-02 with ``bench/pool.py`` (asyncpg 0.32, uvloop; per way 5 rounds of 20,000
blocks, A/B interleaved, on a 2-core machine under others' tests; three runs: the key lookup of
client authentication, ``SELECT 1``, the key lookup pinned to one CPU). With 32 tasks on 20
connections, a check-out, the statement and the return cost this process 20.0–22.2 µs of CPU
(medians) on this pool, 35.7–42.4 µs on ``asyncpg.create_pool`` of the same size without its
reset query, and 54.8–65.9 µs with it (asyncpg's default, which also more than doubles
PostgreSQL's CPU per block). With one task: 15.3–22.8 µs against 37.1–45.3. Against connections
taken from a plain list (no pool), this pool adds 4 µs a block at most, asyncpg's 19–27 µs: it
makes a proxy and goes through a queue per check-out, and per return runs a shielded task and its
reset under a timeout and re-arms a timer. Rerun: ``.venv/bin/python bench/pool.py`` (PostgreSQL
on 127.0.0.1:5432); ``bench/README.md`` has the tables.

A check-out is a list pop and a return an append. The rest of a pool's behaviour is kept:

- connections are opened when needed, up to ``max_size``, and one left idle for
  ``IDLE_LIFETIME`` is closed (one timer for the whole pool);
- when all are in use, a block waits for the next one returned, at most the timeout it gives
  (``GRANTD_DATABASE_TIMEOUT`` from a read or write block), then ``PoolTimeout``;
- a connection that is closed (a database restart, a dropped socket), or comes back inside a
  transaction or from a cancelled block (a statement may still be in flight on it), is never
  handed out again: it is cut, and a waiting block opens a new one instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

# Connections kept open at least between requests: none, they are opened when needed, as
# SQLAlchemy's pool did; one idle this long (seconds) is closed.
IDLE_LIFETIME = 300.0


class PoolTimeout(TimeoutError):
    """Every connection stayed in use for the whole wait (load), as opposed to a connect timeout."""


class Pool:
    """asyncpg connections on one event loop, handed out newest first."""

    __slots__ = ("_connect", "_max", "_loop", "_idle", "_size", "_waiters", "_reaper", "_closed")

    def __init__(self, connect: Callable[[], Any], max_size: int, loop: asyncio.AbstractEventLoop) -> None:
        self._connect = connect
        self._max = max_size
        self._loop = loop
        self._idle: list[tuple[Any, float]] = []  # (connection, when it came back), newest last
        self._size = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    def get_size(self) -> int:
        return self._size

    def get_idle_size(self) -> int:
        return len(self._idle)

    def get_max_size(self) -> int:
        return self._max

    async def acquire(self, timeout: float | None = None) -> Any:
        """A connection: an idle one, else a new one, else the next one returned (waiting at most
        ``timeout`` seconds, then ``PoolTimeout``)."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        idle = self._idle
        while idle:
            conn = idle.pop()[0]
            if not conn.is_closed():
                return conn
            self._size -= 1  # closed while it sat here
        if self._size < self._max:
            return await self._open()
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            conn = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            if waiter.done() and not waiter.cancelled():
                self._hand_over(waiter.result())
            raise PoolTimeout(f"no connection was free within {timeout} s") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as the wait ended: pass it on.
                self._hand_over(waiter.result())
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise
        return conn if conn is not None else await self._open()

    async def _open(self) -> Any:
        self._size += 1
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._hand_over(None)  # a waiting block may open one instead
            raise

    def release(self, conn: Any, reusable: bool = True) -> None:
        """Take ``conn`` back; ``reusable=False`` (a cancelled block) cuts it."""
        if not reusable or self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._size -= 1
            self._hand_over(None)
            return
        self._hand_over(conn)

    def _hand_over(self, conn: Any) -> None:
        """``conn`` to the first block still waiting, else to the idle list. None hands over the
        right to open a connection (one was closed), and is kept by nobody if nobody waits."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append((conn, self._loop.time()))
            if self._reaper is None:
                self._reaper = self._loop.call_later(IDLE_LIFETIME, self._reap)

    def _reap(self) -> None:
        """Close the connections idle for ``IDLE_LIFETIME`` (the oldest are first in the list)."""
        self._reaper = None
        idle, cutoff = self._idle, self._loop.time() - IDLE_LIFETIME
        stale = 0
        while stale < len(idle) and idle[stale][1] <= cutoff:
            stale += 1
        for conn, _ in idle[:stale]:
            conn.terminate()
        del idle[:stale]
        self._size -= stale
        if idle:
            self._reaper = self._loop.call_at(idle[0][1] + IDLE_LIFETIME, self._reap)

    def _stop(self) -> list[Any]:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the connection pool is closed"))
        self._waiters.clear()
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        self._size -= len(idle)
        return idle

    async def close(self) -> None:
        """Close the idle connections; those in use are cut when they come back."""
        for conn in self._stop():
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - already gone
                conn.terminate()

    def terminate(self) -> None:
        """Cut every idle connection at once (also from another event loop, whose own may be closed)."""
        for conn in self._stop():
            try:
                conn.terminate()
            except Exception:  # noqa: BLE001 - that loop is gone; so are its sockets, or soon
                pass
