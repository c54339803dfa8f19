"""Redis, where the rate limits count, stopped, restarted empty and frozen: an account's failed
log-ins are not forgotten (the limit keeps closing, in the database meanwhile and in Redis after),
a frozen Redis is left alone by a circuit breaker instead of costing every request a timeout, and a
refund never takes a counter below zero."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from faults.conftest import PrivateRedis
from grantd.core import ratelimit, redis_breaker
from grantd.core.errors import RateLimited
from grantd.store.db import Database
from support.databases import migrate
from support.neucron import PASSWORD, unique_email
from support.servers import ServerProcess, start_server

pytestmark = pytest.mark.faults

LIMIT = 5


class _Counting:
    """Wraps a registered Redis script: how many times it was called."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.calls = 0

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.script(**kwargs)


@asynccontextmanager
async def _limiter(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[ratelimit.RateLimiter, ratelimit.RedisBackend, _Counting]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}"
    await migrate(url)
    db = Database(url)
    backend = ratelimit.RedisBackend(redis_url, f"t{uuid.uuid4().hex[:8]}:", ratelimit.DatabaseBackend(db), timeout=0.2)
    counting = _Counting(backend._add)
    backend._add = counting  # type: ignore[method-assign]
    limiter = ratelimit.RateLimiter(backend, lambda bucket: bucket)
    try:
        yield limiter, backend, counting
    finally:
        await limiter.close()
        await db.dispose()


def _limit() -> ratelimit.Limit:
    return ratelimit.Limit(f"login:account:{uuid.uuid4().hex}", LIMIT, 900)


def _redis_count(service: PrivateRedis, backend: ratelimit.RedisBackend, limit: ratelimit.Limit) -> int:
    now = int(time.time())
    name = f"{backend.prefix}rl:{limit.bucket}:{now - now % limit.window}"
    return int(redis.Redis(port=service.port).get(name) or 0)


async def test_failures_counted_before_an_outage_still_count_during_and_after_it(redis_service: PrivateRedis, tmp_path: Path) -> None:
    async with _limiter(redis_service.url, tmp_path) as (limiter, backend, _):
        limit = _limit()
        for _ in range(3):
            await limiter.hit(limit)
        assert _redis_count(redis_service, backend, limit) == 3

        await asyncio.to_thread(redis_service.stop)
        await limiter.hit(limit)  # the database counts, from Redis's 3
        await limiter.hit(limit)
        with pytest.raises(RateLimited):
            await limiter.hit(limit)  # 6 > 5: the limit closed during the outage

        await asyncio.to_thread(redis_service.start)  # back, empty
        assert _redis_count(redis_service, backend, limit) == 0
        backend.breaker._open_until = time.monotonic()  # the breaker's interval is over now
        with pytest.raises(RateLimited):
            await limiter.hit(limit)
        assert _redis_count(redis_service, backend, limit) == 7  # carried into Redis: 6 before, this one


async def test_a_frozen_redis_is_left_alone_while_the_breaker_is_open(redis_service: PrivateRedis, tmp_path: Path) -> None:
    async with _limiter(redis_service.url, tmp_path) as (limiter, backend, counting):
        limit = _limit()
        await limiter.hit(limit)
        assert counting.calls == 1
        redis_service.freeze()
        try:
            started = time.monotonic()
            await limiter.hit(limit)  # waits the timeout (0.2 s), then counts in the database
            calls = counting.calls
            for _ in range(2):
                await limiter.hit(limit)
            assert counting.calls == calls  # the breaker is open: Redis was not asked again
            with pytest.raises(RateLimited):
                for _ in range(3):
                    await limiter.hit(limit)
            # Bounded: one timeout, not one per request (no retries, no 2 s default).
            assert time.monotonic() - started < 3
        finally:
            redis_service.thaw()


async def test_a_refund_never_takes_a_counter_below_zero(redis_service: PrivateRedis, tmp_path: Path) -> None:
    async with _limiter(redis_service.url, tmp_path) as (limiter, backend, _):
        limit = _limit()
        hits = await limiter.hit(limit)
        await limiter.refund(hits)
        await limiter.refund(hits)  # once more than it was counted
        assert _redis_count(redis_service, backend, limit) == 0
        redis.Redis(port=redis_service.port).flushall()  # Redis forgot the counter: a refund must not make it -1
        await limiter.refund(hits)
        assert _redis_count(redis_service, backend, limit) == 0
        for _ in range(LIMIT):  # the whole budget is still there
            await limiter.hit(limit)
        with pytest.raises(RateLimited):
            await limiter.hit(limit)

        await asyncio.to_thread(redis_service.stop)  # the database's counters, the same
        try:
            other = _limit()
            hits = await limiter.hit(other)
            for _ in range(3):
                await limiter.refund(hits)
            for _ in range(LIMIT):
                await limiter.hit(other)
            with pytest.raises(RateLimited):
                await limiter.hit(other)
        finally:
            await asyncio.to_thread(redis_service.start)


# ---------------------------------------------------------------- a real server


@pytest.fixture
def server(redis_service: PrivateRedis, secret_key: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "GRANTD_REDIS_URL": redis_service.url,
        "GRANTD_RATE_LIMIT_LOGIN_PER_ACCOUNT": str(LIMIT),
        "GRANTD_LOG_FORMAT": "json",
    }
    process = start_server(f"sqlite+aiosqlite:///{tmp_path / 'grantd.db'}", secret_key, tmp_path, env=env)
    try:
        yield process
    finally:
        process.stop()


async def test_a_login_limit_holds_through_redis_down_and_back_empty(server: ServerProcess, redis_service: PrivateRedis) -> None:
    email = unique_email()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        assert (await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})).status_code == 200

        async def login(password: str) -> httpx.Response:
            return await client.post("/v1/auth/login", json={"email": email, "password": password})

        for _ in range(3):
            assert (await login("wrong password")).status_code == 401
        await asyncio.to_thread(redis_service.stop)
        for _ in range(2):
            assert (await login("wrong password")).status_code == 401
        refused = await login(PASSWORD)  # the right password, but the account's limit is used up
        assert refused.status_code == 429 and refused.headers["retry-after"].isdigit(), refused.text

        await asyncio.to_thread(redis_service.start)  # empty
        await asyncio.sleep(redis_breaker.RETRY_INTERVAL + 0.5)
        refused = await login(PASSWORD)
        assert refused.status_code == 429, refused.text
        names = redis.Redis(port=redis_service.port).keys("grantd:rl:*")
        assert names, "the server counts in Redis again"

        # Frozen: each log-in still answers, and quickly once the breaker is open.
        redis_service.freeze()
        try:
            seconds = []
            for _ in range(4):
                started = time.monotonic()
                assert (await login(PASSWORD)).status_code == 429
                seconds.append(time.monotonic() - started)
            assert max(seconds[1:]) < 1.0, seconds  # no Redis timeout once the breaker is open
        finally:
            redis_service.thaw()

    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("Redis failed") == 2 and log.count("Redis answers again") == 1, log[-4000:]
