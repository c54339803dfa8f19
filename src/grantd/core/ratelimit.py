"""Rate limiting shared by every server process: sliding-window counters in the database, or in Redis.

The interface is small::

    await limiter.hit(Limit(bucket, limit, window))      # count an attempt; RateLimited when over
    await limiter.refund(hits)                           # a success gives its attempt back
    await limiter.fail(Limit(...))                       # count a failure after the fact
    limiter.check_marked(Limit(...))                     # no I/O: refuse a bucket this process saw go over

Counting is by sliding window, estimated from two fixed ones: the window of an attempt at time
t starts at ``t - t % window``, and the attempts of the window before are counted in proportion
to how much of it lies within the last ``window`` seconds (``estimate``). So a limit holds across
a window boundary too, where plain fixed windows let through up to twice as many attempts. (The
estimate assumes the previous window's attempts were spread evenly across it.) Bucket names
are keyed hashes, so no email or client address is stored in clear.

The rules, in one place (``login_limits``, ``signup_limits``, ``token_endpoint``):

- **log-in**, per account (email) and per client address. An attempt is counted *before*
  the password is checked (one atomic upsert per bucket), so that concurrent guesses cannot
  all slip past a check; a successful log-in gives its attempt back (only failures use up
  the budget). Over the limit the attempt is refused before argon2 runs, whatever the
  password — a correct one too, until enough failures have slid out of the last window.
- **sign-up**, per client address: every attempt counts, before the password is hashed.
- **token endpoint failures** (``invalid_client``, ``invalid_grant``), per key_id or
  client_id and per client address, at every endpoint that authenticates a client with
  its secret: the token endpoints of both dialects, revocation (RFC 7009) and
  introspection (RFC 7662), all counting in the same buckets, so that spreading guesses of
  one key's secret over several endpoints buys no extra attempts. The success path stays
  free of rate-limit I/O: a failure is counted when it happens (one upsert); the failure
  that reaches the limit marks the bucket in this process's memory until there is room for
  an attempt again (``free_at``), and later requests on a marked bucket are refused before
  any work at the cost of a dict lookup. Another process learns of the lock-out on its own
  next failure of that bucket (its upsert sees the shared count over the limit and answers
  429); until then it may still serve a *correct* request of that client. That is the trade-off: exact counting
  of failures across processes, no write and no read on a success.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from grantd.core.errors import InvalidClient, InvalidGrant, RateLimited
from grantd.store import ratelimits as store
from grantd.store.ratelimits import Counts

if TYPE_CHECKING:
    from grantd.config import Settings
    from grantd.store.db import Database

log = logging.getLogger("grantd.ratelimit")

# Counters older than this are deleted now and then: two of the longest window (see config), since
# a window's count is read until the next one has passed.
_PRUNE_AGE = 2 * 86400
_PRUNE_EVERY = 1000
_MAX_MARKS = 10_000


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``limit`` attempts in ``bucket`` per ``window`` seconds."""

    bucket: str
    limit: int
    window: int


@dataclass(frozen=True, slots=True)
class Hit:
    """One counted attempt, so that it can be given back."""

    key: str
    window_start: int
    window: int


def estimate(counts: Counts, hit: Hit, now: int) -> float:
    """The attempts of the last ``window`` seconds: the current window's, and the previous window's
    weighted by the share of it still within them."""
    elapsed = now - hit.window_start
    return counts.current + counts.previous * max(hit.window - elapsed, 0) / hit.window


def free_at(counts: Counts, hit: Hit, limit: int) -> float:
    """When the estimate will leave room for one more attempt (``estimate + 1 <= limit``), if no
    other attempt is counted meanwhile."""
    window, start = hit.window, hit.window_start
    current, previous = counts
    if current + 1 <= limit:  # within this window, once enough of the previous one has slid out
        if previous == 0:
            return start
        return start + window * max(0.0, 1 - (limit - current - 1) / previous)
    # In the next window, once enough of this one has slid out (this window's count is then the previous).
    return start + window + window * max(0.0, 1 - (limit - 1) / current)


class Backend(Protocol):
    async def add(self, hits: Sequence[Hit]) -> list[Counts]: ...
    async def refund(self, hits: Sequence[Hit]) -> None: ...
    async def counts(self, hits: Sequence[Hit]) -> list[Counts]: ...
    async def close(self) -> None: ...


class DatabaseBackend:
    """The default: the ``rate_limits`` table of grantd's own database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._adds = 0

    async def add(self, hits: Sequence[Hit]) -> list[Counts]:
        async with self.db.write() as tx:
            totals = [await store.add(tx, hit.key, hit.window_start, hit.window) for hit in hits]
        self._adds += 1
        if self._adds % _PRUNE_EVERY == 0:
            async with self.db.write() as tx:
                await store.prune(tx, int(time.time()) - _PRUNE_AGE)
        return totals

    async def refund(self, hits: Sequence[Hit]) -> None:
        async with self.db.write() as tx:
            for hit in hits:
                await store.refund(tx, hit.key, hit.window_start)

    async def counts(self, hits: Sequence[Hit]) -> list[Counts]:
        async with self.db.read() as conn:
            found = {}
            for window_start, window in {(hit.window_start, hit.window) for hit in hits}:
                keys = [hit.key for hit in hits if (hit.window_start, hit.window) == (window_start, window)]
                counted = await store.counts(conn, keys, window_start, window)
                found.update({(k, window_start): n for k, n in counted.items()})
        return [found.get((hit.key, hit.window_start), _NONE) for hit in hits]

    async def close(self) -> None:
        pass


_NONE = Counts(0, 0)


class RedisBackend:
    """With GRANTD_REDIS_URL: INCR + EXPIRE of the window's counter and GET of the previous
    window's, in one pipeline per attempt. A counter lives two windows: it is read in the next.

    When Redis fails, the database counts instead (and a warning is logged): the limits hold,
    at the database's cost, rather than the front door opening or closing.
    """

    def __init__(self, url: str, prefix: str, fallback: DatabaseBackend) -> None:
        import redis.asyncio as redis

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self.fallback = fallback

    def _name(self, hit: Hit, window_start: int | None = None) -> str:
        return f"{self.prefix}rl:{hit.key}:{hit.window_start if window_start is None else window_start}"

    def _previous(self, hit: Hit) -> str:
        return self._name(hit, hit.window_start - hit.window)

    async def add(self, hits: Sequence[Hit]) -> list[Counts]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for hit in hits:
                pipe.incr(self._name(hit))
                pipe.expire(self._name(hit), 2 * hit.window + 1)
                pipe.get(self._previous(hit))
            results = await pipe.execute()
            return [Counts(int(results[i]), int(results[i + 2] or 0)) for i in range(0, len(results), 3)]
        except self._errors as exc:
            log.warning("redis rate limiter failed (%s); counting in the database", exc.__class__.__name__)
            return await self.fallback.add(hits)

    async def refund(self, hits: Sequence[Hit]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for hit in hits:
                pipe.decr(self._name(hit))
                pipe.expire(self._name(hit), 2 * hit.window + 1)
            await pipe.execute()
        except self._errors as exc:
            log.warning("redis rate limiter failed (%s); refund lost", exc.__class__.__name__)

    async def counts(self, hits: Sequence[Hit]) -> list[Counts]:
        try:
            values = await self.client.mget([name for hit in hits for name in (self._name(hit), self._previous(hit))])
            return [Counts(int(values[i] or 0), int(values[i + 1] or 0)) for i in range(0, len(values), 2)]
        except self._errors as exc:
            log.warning("redis rate limiter failed (%s); reading the database", exc.__class__.__name__)
            return await self.fallback.counts(hits)

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    def __init__(
        self,
        backend: Backend,
        name: Callable[[str], str],
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self._name = name
        self.enabled = enabled
        self._clock = clock
        self._marks: dict[str, float] = {}  # bucket key -> end of the window in which it went over

    def _hits(self, limits: Sequence[Limit], now: int) -> list[Hit]:
        return [Hit(self._name(lim.bucket), now - now % lim.window, lim.window) for lim in limits]

    @staticmethod
    def _refuse(free: Sequence[float], now: int) -> RateLimited:
        retry_after = max(math.ceil(max(free) - now), 1)
        return RateLimited(f"Too many attempts. Try again in {retry_after} seconds.", retry_after)

    async def hit(self, *limits: Limit) -> list[Hit]:
        """Count one attempt in each bucket; RateLimited when any is over its limit (still counted)."""
        if not self.enabled or not limits:
            return []
        now = int(self._clock())
        hits = self._hits(limits, now)
        totals = await self.backend.add(hits)
        over = [
            free_at(n, hit, lim.limit) for hit, n, lim in zip(hits, totals, limits) if estimate(n, hit, now) > lim.limit
        ]
        if over:
            raise self._refuse(over, now)
        return hits

    async def refund(self, hits: Sequence[Hit]) -> None:
        if self.enabled and hits:
            await self.backend.refund(hits)

    async def check(self, *limits: Limit) -> None:
        """Without counting: RateLimited when any bucket has used up its limit."""
        if not self.enabled or not limits:
            return
        now = int(self._clock())
        hits = self._hits(limits, now)
        totals = await self.backend.counts(hits)
        over = [
            free_at(n, hit, lim.limit)
            for hit, n, lim in zip(hits, totals, limits)
            if estimate(n, hit, now) + 1 > lim.limit  # no room for one more
        ]
        if over:
            raise self._refuse(over, now)

    @property
    def has_marks(self) -> bool:
        """Whether any bucket is marked in this process (``check_marked`` can refuse anything)."""
        return self.enabled and bool(self._marks)

    def check_marked(self, *limits: Limit) -> None:
        """No I/O: RateLimited while a bucket this process saw use up its limit has no room yet."""
        if not self.enabled or not self._marks:
            return
        now = self._clock()
        ends = [end for end in (self._marks.get(self._name(lim.bucket), 0.0) for lim in limits) if end > now]
        if ends:
            retry_after = max(math.ceil(max(ends) - now), 1)
            raise RateLimited(f"Too many failed attempts. Try again in {retry_after} seconds.", retry_after)

    async def fail(self, *limits: Limit) -> None:
        """Count a failure in each bucket; mark the buckets that used up their limit; RateLimited when over."""
        if not self.enabled or not limits:
            return
        now = int(self._clock())
        hits = self._hits(limits, now)
        totals = await self.backend.add(hits)
        over = []
        for hit, n, lim in zip(hits, totals, limits):
            used = estimate(n, hit, now)
            if used + 1 > lim.limit:  # no room for another attempt: refuse the bucket until there is
                free = free_at(n, hit, lim.limit)
                self._mark(hit.key, free)
                if used > lim.limit:
                    over.append(free)
        if over:
            raise self._refuse(over, now)

    def _mark(self, key: str, until: float) -> None:
        if len(self._marks) >= _MAX_MARKS:
            now = self._clock()
            self._marks = {k: end for k, end in self._marks.items() if end > now}
            if len(self._marks) >= _MAX_MARKS:
                self._marks.pop(random.choice(list(self._marks)))
        self._marks[key] = until

    async def close(self) -> None:
        await self.backend.close()


def build(settings: Settings, db: Database, name: Callable[[str], str]) -> RateLimiter:
    database = DatabaseBackend(db)
    backend: Backend = (
        RedisBackend(settings.redis_url, settings.redis_key_prefix, database) if settings.redis_url else database
    )
    return RateLimiter(backend, name, enabled=settings.rate_limits_enabled)


# ---------------------------------------------------------------- the rules


def login_limits(settings: Settings, email: str, address: str | None) -> list[Limit]:
    window = settings.rate_limit_login_window
    limits = []
    if email:
        limits.append(Limit(f"login:account:{email}", settings.rate_limit_login_per_account, window))
    if address:
        limits.append(Limit(f"login:address:{address}", settings.rate_limit_login_per_address, window))
    return limits


def signup_limits(settings: Settings, address: str | None) -> list[Limit]:
    if not address:
        return []
    return [Limit(f"signup:address:{address}", settings.rate_limit_signup_per_address, settings.rate_limit_signup_window)]


def registration_limits(settings: Settings, address: str | None) -> list[Limit]:
    """Open dynamic client registration (RFC 7591 without an initial access token), per client
    address: every attempt counts."""
    if not address:
        return []
    return [
        Limit(
            f"register:address:{address}", settings.rate_limit_registration_per_address,
            settings.rate_limit_registration_window,
        )
    ]


def token_limits(settings: Settings, client: str | None, address: str | None) -> list[Limit]:
    window = settings.rate_limit_token_window
    limits = []
    if client:
        limits.append(Limit(f"token:client:{client[:128]}", settings.rate_limit_token_failures_per_client, window))
    if address:
        limits.append(Limit(f"token:address:{address}", settings.rate_limit_token_failures_per_address, window))
    return limits


class Limited(Protocol):
    """What the rules need of the use cases' context (``grantd.core.context.Context``, which builds
    its limiter here)."""

    settings: Settings
    limiter: RateLimiter


class TokenEndpoint:
    """``async with token_endpoint(ctx, client, address):`` around the work of a request that
    authenticates a client (token, revocation, introspection): refuse marked buckets first, count
    invalid_client and invalid_grant failures, and answer 429 instead of the failure once over the
    limit. A class rather than ``@asynccontextmanager``: every token request goes through it."""

    __slots__ = ("_ctx", "_client", "_address")

    def __init__(self, ctx: Limited, client: str | None, address: str | None) -> None:
        self._ctx, self._client, self._address = ctx, client, address

    async def __aenter__(self) -> None:
        limiter = self._ctx.limiter
        if limiter.has_marks:  # the buckets are named only when there is something to check or count
            limiter.check_marked(*token_limits(self._ctx.settings, self._client, self._address))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, (InvalidClient, InvalidGrant)):
            await self._ctx.limiter.fail(*token_limits(self._ctx.settings, self._client, self._address))
        return False


token_endpoint = TokenEndpoint
