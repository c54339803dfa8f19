"""grantd's PostgreSQL connection pool against asyncpg's own, in-process, on one event loop.

    .venv/bin/python bench/pool.py [--blocks N] [--rounds R] [--tasks 1,32] [--query key|select1] [--cpu C]

Makes a fresh PostgreSQL database (as ``BENCH_DB=postgres make bench`` does), migrates it and
adds one app and one key. Then it runs N read blocks (check-out, one statement, return) in each
of these ways, one after the other and in reversed order every other round, R rounds; each way
opens its connections (20, grantd's default pool size), warms them and closes them after, none
of it counted, so that the shared server never sees more than 20 of them:

- ``list``: no pool, the floor: each task (as many as the pool has connections, at most) runs its
  share on a connection of its own.
- ``grantd``: grantd's pool (``store.pg_pool.Pool``), checked out as a read block does.
- ``asyncpg``: ``asyncpg.create_pool`` of the same size, with no reset query on return (grantd's
  pool runs none), checked out with the same timeout.
- ``asyncpg+reset``: the same with asyncpg's default reset (one more statement per return).

Both asyncpg pools keep their connections (asyncpg's default replaces one after 50,000 queries).

The statement is the key lookup that authenticates a client (``store.apps``) by default, or
``SELECT 1``. For each way and number of concurrent tasks it prints the CPU time of this process
per block (``time.process_time``: a busy machine disturbs it far less than wall-clock time), the
median over the rounds with the lowest and highest, the pool's own cost (the median less the
floor's), and the CPU of the pool's PostgreSQL backends per block (``/proc``, 10 ms ticks).
``--cpu C`` pins the process to one CPU, as ``bench/run.py`` pins the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import _cpu_seconds_of, database  # noqa: E402

from grantd.store import pg_pool  # noqa: E402

POOL_SIZE = 20  # grantd's default: GRANTD_DB_POOL_SIZE 10 + GRANTD_DB_MAX_OVERFLOW 10


async def _seeded(url: str) -> tuple[str, tuple[Any, ...]]:
    """The statement to run, and its arguments, on a migrated database with one app and key."""
    from sqlalchemy import insert

    from grantd.store import apps
    from grantd.store.db import Database
    from grantd.store.migrate import upgrade
    from grantd.store.schema import app_keys, users

    db = Database(url)
    try:
        await upgrade(db)
        async with db.write() as tx:
            await tx.execute(insert(users).values(id="u", email="u@bench.example", password_hash="h", created_at=1))
            await tx.execute(
                insert(apps.apps).values(
                    id="a", owner_id="u", name="Bench", redirect_uris="[]", permissions="read_profile",
                    app_key_hash="h", created_at=1, updated_at=1,
                )
            )
            await tx.execute(insert(app_keys).values(id="k", app_id="a", secret_hash="h", created_at=1))
    finally:
        await db.dispose()
    sql, values = apps._LIVE_KEY.pg()
    return sql, values({"key_id": "k"})


class Floor:
    """No pool: each of the tasks (as many as the pool has connections, at most) runs its share
    on a connection of its own."""

    name = "list"

    async def open(self, dsn: str) -> None:
        import asyncpg

        self.connections = [await asyncpg.connect(dsn) for _ in range(POOL_SIZE)]

    async def held(self) -> list[Any]:
        return self.connections

    async def give_back(self, held: list[Any]) -> None:
        pass

    def workers(self, n: int, tasks: int, sql: str, args: tuple[Any, ...]) -> list[Callable[[], Awaitable[None]]]:
        conns = self.connections[: min(tasks, POOL_SIZE)]
        each = n // len(conns)

        def owner(conn: Any) -> Callable[[], Awaitable[None]]:
            async def work() -> None:
                for _ in range(each):
                    await conn.fetchrow(sql, *args)

            return work

        return [owner(conn) for conn in conns]

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()


class Grantd:
    """grantd's pool, checked out and given back as ``store.postgres``'s read block does."""

    name = "grantd"

    async def open(self, dsn: str) -> None:
        import asyncpg

        self.pool = pg_pool.Pool(lambda: asyncpg.connect(dsn), POOL_SIZE, asyncio.get_running_loop())

    async def held(self) -> list[Any]:
        return [await self.pool.acquire(pg_pool.CHECKOUT_TIMEOUT) for _ in range(POOL_SIZE)]

    async def give_back(self, held: list[Any]) -> None:
        for conn in held:
            self.pool.release(conn)

    def workers(self, n: int, tasks: int, sql: str, args: tuple[Any, ...]) -> list[Callable[[], Awaitable[None]]]:
        pool, timeout, each = self.pool, pg_pool.CHECKOUT_TIMEOUT, n // tasks

        async def work() -> None:
            for _ in range(each):
                conn = await pool.acquire(timeout)
                try:
                    await conn.fetchrow(sql, *args)
                except BaseException as exc:
                    pool.release(conn, isinstance(exc, Exception))
                    raise
                pool.release(conn)

        return [work] * tasks

    async def close(self) -> None:
        await self.pool.close()


class Asyncpg:
    """``asyncpg.create_pool`` of the same size, checked out with the same timeout; with asyncpg's
    reset query on each return, or (as grantd's pool) none."""

    def __init__(self, reset: bool) -> None:
        self.name = "asyncpg+reset" if reset else "asyncpg"
        self.reset = reset

    async def open(self, dsn: str) -> None:
        import asyncpg

        # Connections are not replaced after 50,000 queries, asyncpg's default: grantd's pool never
        # replaces them, one connect per 50,000 blocks is too little to see, and a replaced
        # backend's CPU would be lost from the count.
        options: dict[str, Any] = {"max_queries": 2**62}
        if not self.reset:
            options["reset"] = _no_reset
        self.pool = await asyncpg.create_pool(dsn, min_size=0, max_size=POOL_SIZE, **options)

    async def held(self) -> list[Any]:
        return [await self.pool.acquire(timeout=pg_pool.CHECKOUT_TIMEOUT) for _ in range(POOL_SIZE)]

    async def give_back(self, held: list[Any]) -> None:
        for conn in held:
            await self.pool.release(conn)

    def workers(self, n: int, tasks: int, sql: str, args: tuple[Any, ...]) -> list[Callable[[], Awaitable[None]]]:
        pool, timeout, each = self.pool, pg_pool.CHECKOUT_TIMEOUT, n // tasks

        async def work() -> None:
            for _ in range(each):
                async with pool.acquire(timeout=timeout) as conn:
                    await conn.fetchrow(sql, *args)

        return [work] * tasks

    async def close(self) -> None:
        await self.pool.close()


async def _no_reset(_conn: Any) -> None:
    """No statement when a connection comes back, as in grantd's pool."""


async def _backend_pids(way: Floor | Grantd | Asyncpg, sql: str, args: tuple[Any, ...]) -> list[int]:
    """Open every connection the way may use (held at once), run the statement on each (asyncpg
    prepares it), and give their backends' pids."""
    held = await way.held()
    for conn in held:
        await conn.fetchrow(sql, *args)
    pids = [conn.get_server_pid() for conn in held]
    await way.give_back(held)
    return pids


async def _phase(way: Floor | Grantd | Asyncpg, dsn: str, n: int, tasks: int, sql: str, args: tuple[Any, ...]) -> tuple[float, float]:
    """µs of CPU per block, of this process and of the way's backends. The way's connections are
    opened and warmed first and closed after, uncounted: the shared server sees 20 at a time."""
    await way.open(dsn)
    try:
        pids = await _backend_pids(way, sql, args)
        await asyncio.gather(*(work() for work in way.workers(n // 10, tasks, sql, args)))
        workers = way.workers(n, tasks, sql, args)
        done = len(workers) * (n // len(workers))
        backends, started = _cpu_seconds_of(pids), time.process_time()
        await asyncio.gather(*(work() for work in workers))
        cpu = time.process_time() - started
        return cpu / done * 1e6, (_cpu_seconds_of(pids) - backends) / done * 1e6
    finally:
        await way.close()


async def measure(dsn: str, sql: str, args: tuple[Any, ...], blocks: int, rounds: int, tasks: list[int]) -> None:
    ways: list[Floor | Grantd | Asyncpg] = [Floor(), Grantd(), Asyncpg(reset=False), Asyncpg(reset=True)]
    for concurrency in tasks:
        cpu: dict[str, list[float]] = {way.name: [] for way in ways}
        backend: dict[str, list[float]] = {way.name: [] for way in ways}
        for round_ in range(rounds):
            for way in ways if round_ % 2 == 0 else ways[::-1]:
                mine, theirs = await _phase(way, dsn, blocks, concurrency, sql, args)
                cpu[way.name].append(mine)
                backend[way.name].append(theirs)
        floor = statistics.median(cpu["list"])
        print(f"\n{concurrency} task(s), {blocks} blocks a round, {rounds} rounds; µs of CPU per block")
        print(f"{'way':<14} {'median':>7} {'low':>7} {'high':>7} {'pool':>7} {'backend':>8}")
        for name, times in cpu.items():
            median = statistics.median(times)
            print(
                f"{name:<14} {median:7.1f} {min(times):7.1f} {max(times):7.1f} "
                f"{median - floor:7.1f} {statistics.median(backend[name]):8.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20_000, help="blocks per way and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", default="1,32", help="numbers of concurrent tasks, comma-separated")
    parser.add_argument("--query", choices=["key", "select1"], default="key")
    parser.add_argument("--cpu", type=int, help="pin this process to that CPU")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    url, drop = database("postgres", Path(tempfile.mkdtemp(prefix="grantd-pool-")))
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        sql, values = asyncio.run(_seeded(url))
        if args.query == "select1":
            sql, values = "SELECT 1", ()
        if args.loop == "uvloop":
            import uvloop

            uvloop.install()
        tasks = [int(n) for n in args.tasks.split(",")]
        print(f"{args.query}: {sql}")
        asyncio.run(measure(dsn, sql, values, args.blocks, args.rounds, tasks))
    finally:
        drop()


if __name__ == "__main__":
    main()
