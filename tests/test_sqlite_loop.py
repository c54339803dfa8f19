"""The SQLite write path (grantd.store.sqlite): group commit on the event loop, seen from another connection.

Another process sees only what is committed, so each test checks through a second, plain
``sqlite3`` connection, as a second grantd process or the CLI would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from grantd.store.db import Database
from grantd.store.migrate import upgrade
from grantd.store.schema import users


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'grantd.db'}")
    await upgrade(database)
    yield database, tmp_path / "grantd.db"
    await database.dispose()


def _other_process_can_write(path: Path) -> bool:
    """A plain connection that will not wait: can it take SQLite's write lock now?"""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def _emails(path: Path) -> set[str]:
    other = sqlite3.connect(path)
    try:
        # The accounts the migrations reserve (owners of self-registered and orphaned apps) are no one's.
        return {row[0] for row in other.execute("SELECT email FROM users WHERE email NOT LIKE '%@grantd.invalid'")}
    finally:
        other.close()


def _user(n: int) -> dict[str, object]:
    return {"id": f"user-{n}", "email": f"u{n}@example.com", "password_hash": "x", "created_at": n}


async def test_concurrent_writes_are_committed_before_each_returns(db) -> None:  # type: ignore[no-untyped-def]
    database, path = db
    seen_after_return: list[bool] = []

    async def write(n: int) -> None:
        async with database.write() as tx:
            await tx.execute(insert(users).values(**_user(n)))
        # Returned: committed, so another process sees it.
        seen_after_return.append(f"u{n}@example.com" in _emails(path))

    await asyncio.gather(*(write(n) for n in range(40)))
    assert seen_after_return == [True] * 40
    assert len(_emails(path)) == 40
    assert _other_process_can_write(path)


async def test_a_failed_block_rolls_back_only_itself_and_releases_the_write_lock(db) -> None:  # type: ignore[no-untyped-def]
    database, path = db

    async def good(n: int) -> None:
        async with database.write() as tx:
            await tx.execute(insert(users).values(**_user(n)))

    async def bad() -> None:
        async with database.write() as tx:
            await tx.execute(insert(users).values(**_user(99)))
            raise ValueError("refused after writing")

    results = await asyncio.gather(good(1), bad(), good(2), return_exceptions=True)
    assert [type(r) for r in results] == [type(None), ValueError, type(None)]
    assert _emails(path) == {"u1@example.com", "u2@example.com"}

    # A failure alone, with nothing else to commit, must not leave SQLite's write lock taken.
    with pytest.raises(ValueError):
        await bad()
    await asyncio.sleep(0.05)  # the loop turns that close the transaction
    assert _other_process_can_write(path)


async def test_a_writer_waits_for_another_process_without_blocking_the_loop(db) -> None:  # type: ignore[no-untyped-def]
    database, path = db
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    clock = asyncio.create_task(ticker())
    writing = asyncio.create_task(_write_one(database))
    await asyncio.sleep(0.3)
    assert not writing.done() and ticks >= 20  # waiting, and the loop kept turning
    other.execute("ROLLBACK")
    other.close()
    await asyncio.wait_for(writing, 5)
    clock.cancel()
    assert _emails(path) == {"u7@example.com"}


async def _write_one(database: Database) -> None:
    async with database.write() as tx:
        await tx.execute(insert(users).values(**_user(7)))
    async with database.read() as conn:
        written = select(users.c.email).where(users.c.email.not_like("%@grantd.invalid"))  # not the reserved accounts
        assert (await conn.execute(written)).scalar() == "u7@example.com"


@pytest.fixture
async def two_processes(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two handles on one file, as two workers of `grantd serve --workers 2` have."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'grantd.db'}"
    first, second = Database(url), Database(url)
    await upgrade(first)
    yield first, second, tmp_path / "grantd.db"
    await first.dispose()
    await second.dispose()


async def test_two_workers_take_turns_and_every_write_lands(two_processes) -> None:  # type: ignore[no-untyped-def]
    first, second, path = two_processes

    await asyncio.wait_for(asyncio.gather(*(_insert(first if n % 2 else second, n) for n in range(300))), 30)
    assert _emails(path) == {f"u{n}@example.com" for n in range(300)}


async def test_a_worker_waiting_for_its_turn_wakes_when_the_other_commits(two_processes) -> None:  # type: ignore[no-untyped-def]
    first, second, path = two_processes
    holding, leave = await _hold_the_turn(first)
    waiting = asyncio.create_task(_insert(second, 7))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    leave.set()
    await asyncio.wait_for(asyncio.gather(holding, waiting), 5)
    assert _emails(path) == {"u1@example.com", "u7@example.com"}


async def test_a_worker_that_stops_waiting_gives_the_turn_back(two_processes) -> None:  # type: ignore[no-untyped-def]
    """A request cancelled while its worker waits for the turn (a client gone, a shutdown) must not
    leave the turn taken when the wait ends: the other worker would never write again."""
    first, second, path = two_processes
    holding, leave = await _hold_the_turn(first)
    waiting = asyncio.create_task(_insert(second, 7))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    leave.set()
    await asyncio.wait_for(holding, 5)
    await asyncio.sleep(0.1)  # the abandoned wait takes the turn now, and hands it straight back

    await asyncio.wait_for(_insert(first, 2), 5)
    assert _other_process_can_write(path)
    assert _emails(path) == {"u1@example.com", "u2@example.com"}


async def _insert(database: Database, n: int) -> None:
    async with database.write() as tx:
        await tx.execute(insert(users).values(**_user(n)))


async def _hold_the_turn(database: Database) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A worker inside a write block, between two statements of its transaction, until the event."""
    inside, leave = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with database.write() as tx:
            await tx.execute(insert(users).values(**_user(1)))
            inside.set()
            await leave.wait()

    holding = asyncio.create_task(hold())
    await inside.wait()
    return holding, leave


async def test_blocks_queued_behind_one_pass_in_one_turn_of_the_loop(db) -> None:  # type: ignore[no-untyped-def]
    """Twenty blocks that queued while one was inside (as they queue while a worker waits for its
    write turn) all run in the next turn of the loop, not one per turn: the turn is held that much
    less. Each still gets a savepoint of its own, and none returns before the COMMIT."""
    database, path = db
    turns = 0
    inside, leave = asyncio.Event(), asyncio.Event()
    finished: dict[int, int] = {}

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def first() -> None:
        async with database.write() as tx:
            await tx.execute(insert(users).values(**_user(0)))
            inside.set()
            await leave.wait()

    async def queued(n: int) -> None:
        async with database.write() as tx:
            await tx.execute(insert(users).values(**_user(n)))
            finished[n] = turns
        assert f"u{n}@example.com" in _emails(path)

    holding = asyncio.create_task(first())
    await inside.wait()
    blocks = [asyncio.create_task(queued(n)) for n in range(1, 21)]
    await asyncio.sleep(0)  # all twenty are waiting now
    ticker = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    leave.set()
    await asyncio.wait_for(asyncio.gather(holding, *blocks), 5)
    ticker.cancel()
    assert len(finished) == 20
    assert max(finished.values()) - min(finished.values()) <= 1, finished
    assert _emails(path) == {f"u{n}@example.com" for n in range(21)}


async def test_a_worker_commits_at_once_when_the_other_waits_for_the_turn(two_processes) -> None:  # type: ignore[no-untyped-def]
    """A worker whose loop is busy (every turn takes 30 ms of other requests' work here) commits in
    the first turn after the other worker begins to wait, instead of keeping the turn for the group
    commit's two turns; the waiting worker says so through the wait file, and stops saying it once
    it has the turn."""
    first, second, path = two_processes
    turns = 0
    busy = True

    def other_requests() -> None:
        nonlocal turns
        if busy:
            turns += 1
            time.sleep(0.03)  # the CPU work of other requests, between two polls of the loop
            asyncio.get_running_loop().call_soon(other_requests)

    await _insert(first, 0)  # both files exist, the connections are warm
    await _insert(second, 1)
    assert not first._loop_sqlite._turn.wanted()  # type: ignore[union-attr]

    async def then_second() -> int:
        await _insert(second, 3)
        return turns

    async with first.write() as tx:
        await tx.execute(insert(users).values(**_user(2)))
        waiting = asyncio.create_task(then_second())
        asyncio.get_running_loop().call_soon(other_requests)
    # The first block's COMMIT is due two turns later; the second worker asked for the turn meanwhile.
    done_at = await asyncio.wait_for(waiting, 10)
    busy = False
    assert not first._loop_sqlite._turn.wanted()  # type: ignore[union-attr]
    assert not second._loop_sqlite._turn.wanted()  # type: ignore[union-attr]
    assert _emails(path) == {f"u{n}@example.com" for n in range(4)}
    # Waiting began in turn 0; the first worker committed in turn 1, the second had its turn in the
    # next, ran its block in the one after and committed two turns later. Holding the turn for the
    # group commit's two turns, then waking the waiter through three futures took 8 or more.
    assert done_at <= 6, done_at
