"""PostgreSQL requests run on asyncpg connections in grantd's own pool (store.pg_pool.Pool,
store.postgres.PgConnection): what the store gets back must be what SQLAlchemy's engine gave
(types, rows by attribute, IntegrityError), the pool gauges must read that pool, a connection that
a database restart killed while it sat in the pool must not fail the next request, and the pool
must hand out, wait for, cut and close connections as a pool should.

A restart is played by ``pg_terminate_backend`` on the pool's own connections (the shared
PostgreSQL server is not restarted), once while the event loop is blocked, so that the pool has
not yet noticed the dead sockets when the next block takes one.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import func, insert, select, text, update

from grantd.store import signing_keys as signing_key_store
from grantd.store import users as user_store
from grantd.store.availability import DatabaseUnavailable
from grantd.store.db import Database
from grantd.store.schema import rate_limits, signing_keys, users
from support.neucron import new_flow
from support.servers import ServerProcess

pytestmark = pytest.mark.db


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    try:
        yield database
    finally:
        await database.dispose()


def _user(tag: str) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "email": f"{tag}-{uuid.uuid4().hex[:10]}@example.com", "password_hash": "h", "created_at": 1}


async def test_values_come_back_as_sqlalchemy_gave_them(db: Database) -> None:
    kid = f"test-{uuid.uuid4().hex}"
    sealed = b"\x00\xffsealed bytes"
    async with db.write() as tx:
        await signing_key_store.insert_key(
            tx, kid=kid, algorithm="ES256", public_jwk="{}", private_key=sealed, now=2**40, activates_at=2**40
        )
    async with db.read() as conn:
        row = (await conn.execute(select(signing_keys).where(signing_keys.c.kid == kid))).one()
        assert type(row.private_key) is bytes and row.private_key == sealed
        assert type(row.created_at) is int and row.created_at == 2**40
        assert row.retired_at is None
        assert row.kid == row[0] == row._mapping["kid"] == kid
        kid_again, algorithm = (await conn.execute(select(signing_keys.c.kid, signing_keys.c.algorithm).where(signing_keys.c.kid == kid))).one()
        assert (kid_again, algorithm) == (kid, "ES256")
        assert (await conn.execute(select(func.count()).select_from(signing_keys).where(signing_keys.c.kid == kid))).scalar_one() == 1
        assert (await conn.execute(text("SELECT CAST(:a AS int) + 1 AS n, true AS yes"), {"a": 41})).one() == (42, True)
        assert (await conn.execute(select(users).where(users.c.id == "nobody"))).first() is None
        assert (await conn.execute(select(users.c.id).where(users.c.id.in_(["a", "b", "c"])))).scalars().all() == []
    async with db.write() as tx:
        await tx.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(retired_at=1))
        await tx.execute(text("DELETE FROM signing_keys WHERE kid = :k"), {"k": kid})


async def test_rowcount_executemany_and_integrity_error(db: Database) -> None:
    rows = [_user("many") for _ in range(3)]
    async with db.write() as tx:
        await tx.execute(insert(users), rows)
        changed = await tx.execute(update(users).where(users.c.id.in_([r["id"] for r in rows])).values(created_at=2))
        assert changed.rowcount == 3
    taken = rows[0]
    async with db.write() as tx:
        # A unique violation surfaces as SQLAlchemy's IntegrityError, which the store catches inside
        # a savepoint: the transaction goes on.
        assert not await user_store.insert_user(tx, user_id=str(uuid.uuid4()), email=str(taken["email"]), password_hash="h", now=1)
        fresh = _user("fresh")
        assert await user_store.insert_user(tx, user_id=str(fresh["id"]), email=str(fresh["email"]), password_hash="h", now=1)
    async with db.read() as conn:
        assert (await user_store.by_email(conn, str(fresh["email"]))) is not None


async def test_write_one_runs_one_statement_in_autocommit(db: Database) -> None:
    row = _user("one")
    async with db.write_one() as tx:
        assert (await tx.execute(insert(users).values(**row))).rowcount == 1
        with pytest.raises(RuntimeError, match="one statement"):
            await tx.execute(select(users))
        with pytest.raises(RuntimeError, match="one statement"):
            tx.begin_nested()
    async with db.read() as conn:
        assert (await user_store.by_id(conn, str(row["id"]))) is not None


async def test_a_failed_block_rolls_back(db: Database) -> None:
    row = _user("rollback")
    with pytest.raises(RuntimeError):
        async with db.write() as tx:
            await tx.execute(insert(users).values(**row))
            raise RuntimeError("the block fails")
    async with db.read() as conn:
        assert (await conn.execute(select(users).where(users.c.id == row["id"]))).first() is None


async def _backend_pid(conn) -> int:  # type: ignore[no-untyped-def]
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _pids(db: Database, n: int) -> set[int]:
    """The backend pids of ``n`` pooled connections (held at once, so they are distinct)."""
    pids: set[int] = set()
    everyone = asyncio.Event()

    async def hold() -> None:
        async with db.read() as conn:
            pids.add(await _backend_pid(conn))
            if len(pids) == n:
                everyone.set()
            await asyncio.wait_for(everyone.wait(), 10)

    await asyncio.gather(*(hold() for _ in range(n)))
    return pids


def _terminate_blocking(url: str, pids: set[int]) -> None:
    """Kill the backends from another thread while this event loop stands still."""
    import asyncpg

    async def kill() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(pids))
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(kill()))
    thread.start()
    thread.join()
    time.sleep(0.2)  # the sockets are closed by now; the blocked loop has not seen it


async def _use(db: Database, tag: str) -> None:
    row, one = _user(tag), _user(f"{tag}-one")
    async with db.write() as tx:
        await tx.execute(insert(users).values(**row))
    async with db.write_one() as tx:
        await tx.execute(insert(users).values(**one))
    async with db.read() as conn:
        assert (await user_store.by_id(conn, str(row["id"]))) is not None
    async with db.read() as conn:
        assert (await conn.execute(select(users.c.email).where(users.c.id == row["id"]))).scalar_one() == row["email"]


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "noticed"])
async def test_connections_killed_in_the_pool_fail_no_request(db: Database, postgres_url: str, noticed: bool) -> None:
    await _use(db, "before")
    pids = await _pids(db, 3)
    _terminate_blocking(postgres_url, pids)
    if noticed:
        await asyncio.sleep(0.2)  # the loop sees the sockets close: the pool drops them
    for attempt in range(4):  # each kind of block meets a dead connection at least once
        await _use(db, f"after-{attempt}")
    assert not (await _pids(db, 3)) & pids


async def test_pool_gauges_read_the_pool(db: Database) -> None:
    size, used, idle, overflow = db.pool_status()  # type: ignore[misc]
    assert (size, used, idle, overflow) == (10, 0, 0, 0)  # nothing opened before the first use
    async with db.read() as conn:
        await conn.execute(select(rate_limits.c.key).limit(1))
        assert db.pool_status() == (10, 1, 0, 0)
    assert db.pool_status() == (10, 0, 1, 0)
    await db.dispose()
    assert db.pool_status() == (10, 0, 0, 0)


async def test_a_block_waits_for_a_connection_at_most_the_database_timeout(postgres_url: str) -> None:
    """Every connection busy for longer than the database timeout: the block gives up with
    DatabaseUnavailable (a 503 to its client), counted as load, not as an outage."""
    small = Database(postgres_url, pool_size=1, max_overflow=0, timeout=0.5)
    try:
        async with small.read() as held:
            await held.execute(select(users.c.id).limit(1))
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as refused:
                async with small.write():
                    pass
            assert 0.45 <= time.monotonic() - started < 5
            assert refused.value.reason == "pool_exhausted"
            assert small.availability.down_since is None  # load is not an outage
        async with small.write() as tx:  # free again: taken at once
            await tx.execute(select(users.c.id).limit(1))
    finally:
        await small.dispose()


async def test_blocks_take_turns_on_a_full_pool(postgres_url: str) -> None:
    """With every connection in use, blocks wait and each gets the next one returned: none fails,
    and no more connections are opened than the pool allows."""
    small = Database(postgres_url, pool_size=2, max_overflow=0)
    seen: set[int] = set()
    largest = 0

    async def block() -> None:
        nonlocal largest
        async with small.read() as conn:
            seen.add(await _backend_pid(conn))
            largest = max(largest, small.pool_status()[1])  # type: ignore[index]
            await asyncio.sleep(0.02)

    try:
        await asyncio.gather(*(block() for _ in range(12)))
        assert largest == 2 and len(seen) == 2
        assert small.pool_status() == (2, 0, 2, 0)
    finally:
        await small.dispose()


async def test_a_cancelled_block_does_not_hand_on_its_connection(db: Database) -> None:
    """A block cancelled in the middle of a statement leaves that statement running on its
    connection: the next block gets another connection, and at once."""

    pids: list[int] = []

    async def slow() -> None:
        async with db.read() as conn:
            pids.append(await _backend_pid(conn))
            await conn.execute(text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.monotonic()
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
        assert await _backend_pid(conn) != pids[0]  # the cancelled block's connection was cut, not kept
    assert time.monotonic() - started < 2
    assert db.pool_status() == (10, 0, 1, 0)


async def test_a_connection_lost_in_use_lets_a_waiting_block_open_another(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-connection pool whose connection dies while a block holds it: the block fails, and the
    block waiting for that connection opens a new one instead of waiting out its timeout."""
    small = Database(postgres_url, pool_size=1, max_overflow=0, timeout=5.0)
    holding = asyncio.Event()

    async def doomed() -> None:
        async with small.read() as conn:
            pid = await _backend_pid(conn)
            holding.set()
            await asyncio.sleep(0.2)  # meanwhile the other block queues for this connection
            _terminate_blocking(postgres_url, {pid})
            await conn.execute(text("SELECT 1"))

    async def waiting() -> int:
        await holding.wait()
        started = time.monotonic()
        async with small.read() as conn:
            pid = await _backend_pid(conn)
        assert time.monotonic() - started < 3
        return pid

    try:
        results = await asyncio.gather(doomed(), waiting(), return_exceptions=True)
        assert isinstance(results[0], Exception)  # the block on the killed connection failed
        assert isinstance(results[1], int)  # the waiting one ran, on a new connection
        assert small.pool_status() == (1, 0, 1, 0)
    finally:
        await small.dispose()


async def test_idle_connections_are_closed_after_the_idle_lifetime(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grantd.store import pg_pool

    monkeypatch.setattr(pg_pool, "IDLE_LIFETIME", 0.3)
    database = Database(postgres_url)
    try:
        async with database.read() as conn:
            pid = await _backend_pid(conn)
        assert database.pool_status() == (10, 0, 1, 0)
        await asyncio.sleep(0.8)
        assert database.pool_status() == (10, 0, 0, 0)
        async with database.read() as conn:  # a new connection is opened for the next block
            assert await _backend_pid(conn) != pid
            alive = await conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
            assert alive.scalar_one() == 0
    finally:
        await database.dispose()


async def test_the_pool_size_is_the_operators(
    server_factory: Callable[..., ServerProcess], postgres_url: str
) -> None:
    """GRANTD_DB_POOL_SIZE and GRANTD_DB_MAX_OVERFLOW bound a worker's connections: a burst of
    concurrent writes is served, on at most size + overflow connections.

    The burst is of revocations (RFC 7009), each a committed write that holds its connection
    while PostgreSQL flushes it: more than two at once need the overflow. (client_credentials
    only reads one row, too briefly for a burst of it to need a third connection.)"""
    from prometheus_client.parser import text_string_to_metric_families

    env = {"GRANTD_DB_POOL_SIZE": "2", "GRANTD_DB_MAX_OVERFLOW": "1", "GRANTD_METRICS_ENABLED": "true"}
    server = server_factory(postgres_url, env=env)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        flow = await new_flow(client)
        form = {"grant_type": "client_credentials", "client_id": flow.app_id, "client_secret": flow.key_secret}
        issued = [(await client.post("/oauth2/token", data=form)).json()["access_token"] for _ in range(40)]
        credentials = {"client_id": flow.app_id, "client_secret": flow.key_secret}
        responses = await asyncio.gather(
            *(client.post("/oauth2/revoke", data={"token": token, **credentials}) for token in issued)
        )
        assert [r.status_code for r in responses] == [200] * 40
        introspected = await client.post("/oauth2/introspect", data={"token": issued[0], **credentials})
        assert introspected.json() == {"active": False}  # the writes were made
        metrics = (await client.get("/metrics")).text
    gauges = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name.startswith("grantd_db_pool_")
    }
    # The connections the burst opened stay idle in the pool: size 2, one beyond it, no more.
    assert gauges == {
        "grantd_db_pool_size": 2, "grantd_db_pool_checked_out": 0, "grantd_db_pool_idle": 3, "grantd_db_pool_overflow": 1
    }
