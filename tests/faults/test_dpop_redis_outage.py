"""The DPoP replay store (RFC 9449 §11.1) when its Redis freezes, stops and comes back empty: token
requests with a proof keep answering without waiting on Redis each time (the circuit breaker every
use of Redis shares), a replayed proof is refused during the outage and after it, and the log has
one warning per outage and one line at its end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis
import sqlalchemy as sa

from acting_user import developer, new_app
from faults.conftest import PrivateRedis
from grantd.core import dpop, redis_breaker
from grantd.store.db import Database
from grantd.store.schema import dpop_proof_jtis
from support.databases import migrate
from support.neucron import Flow
from support.servers import ServerProcess, start_server
from test_dpop import Holder, credentials, refused

pytestmark = pytest.mark.faults


@pytest.fixture
def server(redis_service: PrivateRedis, secret_key: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"GRANTD_REDIS_URL": redis_service.url, "GRANTD_LOG_FORMAT": "json"}
    process = start_server(f"sqlite+aiosqlite:///{tmp_path / 'grantd.db'}", secret_key, tmp_path, env=env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def app(server: ServerProcess) -> AsyncIterator[Flow]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        yield await new_app(await developer(http), client_type="confidential")


def _proofs_in_redis(service: PrivateRedis) -> int:
    return len(redis.Redis(port=service.port).keys("grantd:dpop:*"))


async def test_a_frozen_then_empty_redis_costs_little_and_lets_no_replay_through(
    server: ServerProcess, app: Flow, redis_service: PrivateRedis
) -> None:
    holder = Holder()
    token_url = f"{server.base_url}/oauth2/token"

    async def timed(proof: str) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await credentials(app, proof)
        return response, time.monotonic() - started

    assert (await credentials(app, holder.proof("POST", token_url))).status_code == 200
    assert _proofs_in_redis(redis_service) == 1

    redis_service.freeze()
    try:
        seconds = []
        during = holder.proof("POST", token_url)  # first used while Redis is frozen
        response, took = await timed(during)
        assert response.status_code == 200, response.text
        seconds.append(took)
        for _ in range(3):
            response, took = await timed(holder.proof("POST", token_url))
            assert response.status_code == 200, response.text
            seconds.append(took)
        await asyncio.sleep(redis_breaker.RETRY_INTERVAL + 0.5)  # one request tries the frozen Redis again
        for _ in range(3):
            response, took = await timed(holder.proof("POST", token_url))
            assert response.status_code == 200, response.text
            seconds.append(took)
        # At most one Redis timeout (GRANTD_REDIS_TIMEOUT, 0.25 s) per request, and only once per
        # breaker interval: never the client library's default of seconds, nor retries.
        assert max(seconds) < 1.5, seconds

        refused(await credentials(app, during))  # the database recorded it
    finally:
        await asyncio.to_thread(redis_service.stop)  # and it comes back empty
    await asyncio.to_thread(redis_service.start)
    assert _proofs_in_redis(redis_service) == 0

    await asyncio.sleep(redis_breaker.RETRY_INTERVAL + 0.5)
    assert (await credentials(app, holder.proof("POST", token_url))).status_code == 200
    assert _proofs_in_redis(redis_service) == 1, "proofs are recorded in Redis again"
    refused(await credentials(app, during))  # first used during the outage: not replayable through Redis now

    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("Redis failed for DPoP replays") == 1, log[-4000:]
    assert log.count("Redis answers again for DPoP replays") == 1, log[-4000:]


# ---------------------------------------------------------------- the window after an outage


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replays.db'}"
    await migrate(url)
    db = Database(url)
    try:
        yield db
    finally:
        await db.dispose()


async def _rows(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(dpop_proof_jtis))).scalar_one())


async def test_after_an_outage_the_database_records_too_until_its_proofs_expire(
    redis_service: PrivateRedis, database: Database
) -> None:
    ctx = SimpleNamespace(db=database)
    replays = dpop.RedisReplays(redis_service.url, f"t{uuid.uuid4().hex[:8]}:", timeout=0.2)
    now = int(time.time())
    lifetime = dpop.MAX_AGE + dpop.LEEWAY

    def proof() -> tuple[str, int, int]:
        return uuid.uuid4().hex, now + lifetime, now  # a hash, its expires_at (iat = now), now

    try:
        assert await replays.first_use(ctx, *proof())
        assert await _rows(database) == 0  # Redis alone

        await asyncio.to_thread(redis_service.stop)
        during = proof()
        assert await replays.first_use(ctx, *during)
        assert not await replays.first_use(ctx, *during)  # refused by the database
        assert await _rows(database) == 1
        await asyncio.to_thread(redis_service.start)  # empty

        replays.breaker._open_until = time.monotonic()  # the breaker's interval is over now
        after = proof()
        assert await replays.first_use(ctx, *after)  # in Redis and, within the window, the database
        assert not await replays.first_use(ctx, *after)
        assert not await replays.first_use(ctx, *during)  # Redis took it, the database refused it
        assert _proofs_in_redis_with(redis_service, replays.prefix) == 2
        assert await _rows(database) == 2

        now += lifetime  # the proof of the outage could no longer pass: Redis alone again
        assert await replays.first_use(ctx, *proof())
        assert await _rows(database) == 2
    finally:
        await replays.close()


def _proofs_in_redis_with(service: PrivateRedis, prefix: str) -> int:
    return len(redis.Redis(port=service.port).keys(f"{prefix}dpop:*"))
