"""How grantd talks to Redis, for every use of it (rate-limit counters, DPoP proofs used): one
client with short timeouts and a circuit breaker, so that a Redis that fails or freezes costs
requests next to nothing and the log one line per outage.

- Redis gets ``timeout`` seconds (``GRANTD_REDIS_TIMEOUT``) to connect or to answer, without
  retries.
- A failure opens the breaker: one warning is logged (naming the use and what grantd does
  instead), ``grantd_redis_available{use}`` drops to 0, and for ``RETRY_INTERVAL`` seconds
  Redis is not asked at all — the caller uses the database instead.
- Then one request tries Redis again (the others keep to the database for another interval
  meanwhile): if Redis answers, one info line says so, the gauge is 1 again and the breaker is
  closed; if not, another interval.

A caller asks ``closed()`` before each Redis call, and tells the breaker what came of it:
``failed(exc)`` for an error in ``errors``, ``answered()`` for an answer. Both say whether they
turned the breaker (an outage began, or ended), for a caller that carries state across one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from grantd import metrics

log = logging.getLogger("grantd.redis")

# Seconds Redis is left alone after it failed (the breaker's open time).
RETRY_INTERVAL = 5.0


class RedisBreaker:
    """A Redis client (``client``) for one ``use`` ("rate limits"), and its circuit breaker.
    ``instead`` says, for the warning, what grantd does while the breaker is open."""

    def __init__(
        self, url: str, use: str, instead: str, *, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self.use = use
        self.instead = instead
        self._clock = clock
        self._open_until = 0.0  # Redis is left alone until then (0: the breaker is closed)
        self._opened_at = 0.0
        self._gauge = metrics.redis_available.labels(use)
        self._gauge.set(1)

    @property
    def is_open(self) -> bool:
        """Whether an outage is on: Redis failed and has not answered since."""
        return bool(self._open_until)

    def closed(self) -> bool:
        """Whether to ask Redis now: the breaker is closed, or its interval is over (then this
        caller tries, and the others keep to the fallback for another interval meanwhile)."""
        if not self._open_until:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        self._open_until = now + RETRY_INTERVAL
        return True

    def failed(self, exc: BaseException) -> bool:
        """Redis failed: open the breaker (again). True when this began an outage."""
        now = self._clock()
        began = not self._open_until
        if began:
            self._opened_at = now
            log.warning(
                "Redis failed for %s (%s): %s, trying Redis again every %g s",
                self.use, exc.__class__.__name__, self.instead, RETRY_INTERVAL,
            )
            self._gauge.set(0)
        self._open_until = now + RETRY_INTERVAL
        return began

    def answered(self) -> bool:
        """Redis answered: close the breaker. True when this ended an outage."""
        if not self._open_until:
            return False
        self._open_until = 0.0
        log.info("Redis answers again for %s after %.1f s", self.use, self._clock() - self._opened_at)
        self._gauge.set(1)
        return True

    async def close(self) -> None:
        await self.client.aclose()
