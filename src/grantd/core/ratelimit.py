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
- **token endpoint failures** (``invalid_client``, ``invalid_grant``), per client address and
  per key_id or client_id *at* that address, at every endpoint that authenticates a client with
  its secret: the token endpoints of both dialects, revocation (RFC 7009) and
  introspection (RFC 7662), all counting in the same buckets, so that spreading guesses of
  one key's secret over several endpoints buys no extra attempts. Never per client alone: the
  identifier is only claimed (read before the request authenticates), and a client's id is no
  secret, so a budget of its own would let anyone lock the client out from anywhere; failed
  guesses at a 256-bit secret are no threat worth that. Failures at one address never refuse
  a request from another. The success path stays
  free of rate-limit I/O: a failure is counted when it happens (one upsert); the failure
  that reaches the limit marks the bucket in this process's memory until there is room for
  an attempt again (``free_at``), and later requests on a marked bucket are refused before
  any work at the cost of a dict lookup. Another process learns of the lock-out on its own
  next failure of that bucket (its upsert sees the shared count over the limit and answers
  429); until then it may still serve a *correct* request from that address. That is the trade-off: exact counting
  of failures across processes, no write and no read on a success.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from grantd.core.errors import InvalidClient, InvalidGrant, RateLimited
from grantd.core.redis_breaker import RedisBreaker
from grantd.store import ratelimits as store
from grantd.store.ratelimits import Counts

if TYPE_CHECKING:
    from grantd.config import Settings
    from grantd.store.db import Database

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

    async def add(self, hits: Sequence[Hit], floors: Sequence[int] | None = None) -> list[Counts]:
        """Count one attempt per hit; ``floors``: per hit, attempts known to be counted already in
        its window (Redis's, before it failed), which the count goes on from if it is higher."""
        async with self.db.write() as tx:
            totals = [
                await store.add(tx, hit.key, hit.window_start, hit.window, floor=floors[i] if floors else 0)
                for i, hit in enumerate(hits)
            ]
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

# Counts of this many (bucket, window) pairs are remembered for carrying over an outage.
_MAX_SEEN = 50_000

# Per hit (KEYS: its window's counter and the previous window's; ARGV: the counter's lifetime and
# the floors of both): INCR, raised to one above the floor if it was below it (a Redis that came
# back empty, or missed what the database counted meanwhile), the previous window's counter
# raised to its floor, and both values returned.
_ADD_SCRIPT = """
local out = {}
for i = 1, #KEYS / 2 do
  local current, previous = KEYS[2 * i - 1], KEYS[2 * i]
  local floor, previous_floor = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local n = redis.call('INCR', current)
  if n <= floor then
    n = floor + 1
    redis.call('SET', current, n)
  end
  redis.call('EXPIRE', current, ARGV[3 * i - 2])
  local before = tonumber(redis.call('GET', previous) or '0')
  if before < previous_floor then
    before = previous_floor
    redis.call('SET', previous, before, 'EX', ARGV[3 * i - 2])
  end
  out[2 * i - 1] = n
  out[2 * i] = before
end
return out
"""
# A refund never takes a counter below zero (nor makes one that Redis forgot, as DECR would).
_REFUND_SCRIPT = """
for i = 1, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 0
"""


class RedisBackend:
    """With GRANTD_REDIS_URL: the counters in Redis, one script call per attempt (INCR + EXPIRE of
    the window's counter, GET of the previous window's). A counter lives two windows: it is read
    in the next.

    Redis failing must neither open the front door nor let an account's failures be forgotten:

    - **A circuit breaker** (``core.redis_breaker``, the one shared by every use of Redis): Redis
      gets ``timeout`` seconds (GRANTD_REDIS_TIMEOUT, connecting or answering; no retries). A
      failure logs one warning and opens the breaker: for ``RETRY_INTERVAL`` seconds nothing is
      asked of Redis; the database counts instead. Then one request tries Redis again: if it
      answers, one info line says so and Redis counts again; if not, another interval in the
      database.
    - **Counts carried over**: the process remembers the last count it saw of each recent bucket
      (``_seen``). When the breaker opens, those become floors: the database's count of a bucket
      goes on from the higher of its own and the floor. When Redis answers again, its counters
      go on from the higher of theirs and the last count the database gave (a Redis that restarted
      empty is raised back to it). So a limit that was closing keeps closing through the outage
      and after it. What one process never saw of a bucket (another process's attempts before
      the outage) is not carried over by it.
    """

    def __init__(
        self, url: str, prefix: str, fallback: DatabaseBackend, *, timeout: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.breaker = RedisBreaker(url, "rate limits", "counting them in the database", timeout=timeout, clock=clock)
        self._errors = self.breaker.errors
        self.client = self.breaker.client
        self._add = self.client.register_script(_ADD_SCRIPT)
        self._refund = self.client.register_script(_REFUND_SCRIPT)
        self.prefix = prefix
        self.fallback = fallback
        self._seen: dict[tuple[str, int], int] = {}  # (key, window start) -> its count last seen
        self._floors: dict[tuple[str, int], int] = {}  # counts to carry into the other backend

    def _name(self, hit: Hit, window_start: int | None = None) -> str:
        return f"{self.prefix}rl:{hit.key}:{hit.window_start if window_start is None else window_start}"

    def _previous(self, hit: Hit) -> str:
        return self._name(hit, hit.window_start - hit.window)

    # -- the breaker

    def _failed(self, exc: BaseException) -> None:
        if self.breaker.failed(exc):  # an outage begins: what Redis had, as far as this process knows
            for pair, count in self._seen.items():
                if count > self._floors.get(pair, 0):
                    self._floors[pair] = count

    # -- what this process saw

    def _saw(self, hits: Sequence[Hit], totals: Sequence[Counts], into: dict[tuple[str, int], int]) -> None:
        if len(into) >= _MAX_SEEN:
            for pair in list(into)[: _MAX_SEEN // 2]:  # the oldest half
                del into[pair]
        for hit, counted in zip(hits, totals):
            pair = (hit.key, hit.window_start)
            into.pop(pair, None)  # re-inserted last: the newest
            into[pair] = counted.current

    def _floor(self, hit: Hit) -> tuple[int, int]:
        floors = self._floors
        if not floors:
            return 0, 0
        return floors.get((hit.key, hit.window_start), 0), floors.get((hit.key, hit.window_start - hit.window), 0)

    # -- the backend

    async def add(self, hits: Sequence[Hit]) -> list[Counts]:
        floors = [self._floor(hit) for hit in hits]
        if self.breaker.closed():
            keys: list[str] = []
            args: list[int] = []
            for hit, (floor, previous_floor) in zip(hits, floors):
                keys += [self._name(hit), self._previous(hit)]
                args += [2 * hit.window + 1, floor, previous_floor]
            try:
                values = await self._add(keys=keys, args=args)
            except self._errors as exc:
                self._failed(exc)
            else:
                self.breaker.answered()
                totals = [Counts(int(values[i]), int(values[i + 1])) for i in range(0, len(values), 2)]
                for hit in hits:  # carried into Redis now: its counters hold them
                    self._floors.pop((hit.key, hit.window_start), None)
                    self._floors.pop((hit.key, hit.window_start - hit.window), None)
                self._saw(hits, totals, self._seen)
                return totals
        floors = [self._floor(hit) for hit in hits]  # again: a failure just now made the floors
        totals = await self.fallback.add(hits, [floor for floor, _ in floors])
        totals = [Counts(c.current, max(c.previous, previous)) for c, (_, previous) in zip(totals, floors)]
        self._saw(hits, totals, self._floors)  # the database's counts: what Redis must go on from
        return totals

    async def refund(self, hits: Sequence[Hit]) -> None:
        for seen in (self._seen, self._floors):
            for hit in hits:
                pair = (hit.key, hit.window_start)
                if seen.get(pair, 0) > 0:
                    seen[pair] -= 1
        if self.breaker.closed():
            try:
                await self._refund(keys=[self._name(hit) for hit in hits])
            except self._errors as exc:
                self._failed(exc)
            else:
                self.breaker.answered()
                return
        await self.fallback.refund(hits)

    async def counts(self, hits: Sequence[Hit]) -> list[Counts]:
        floors = [self._floor(hit) for hit in hits]
        if self.breaker.closed():
            try:
                values = await self.client.mget([name for hit in hits for name in (self._name(hit), self._previous(hit))])
            except self._errors as exc:
                self._failed(exc)
            else:
                self.breaker.answered()
                found = [Counts(int(values[i] or 0), int(values[i + 1] or 0)) for i in range(0, len(values), 2)]
                return [Counts(max(c.current, f), max(c.previous, p)) for c, (f, p) in zip(found, floors)]
        found = await self.fallback.counts(hits)
        floors = [self._floor(hit) for hit in hits]
        return [Counts(max(c.current, f), max(c.previous, p)) for c, (f, p) in zip(found, floors)]

    async def close(self) -> None:
        await self.breaker.close()


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
        RedisBackend(settings.redis_url, settings.redis_key_prefix, database, timeout=settings.redis_timeout)
        if settings.redis_url
        else database
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
    """Failures per client address, and per client named (claimed, not yet proven) *from* that
    address: never per client alone, which anyone could use up for a client whose id they know
    (a public ``client_id``, a ``key_id`` in the audit log), refusing its correct requests."""
    window = settings.rate_limit_token_window
    limits = []
    if client:
        bucket = f"token:client:{client[:128]}@{address or ''}"
        limits.append(Limit(bucket, settings.rate_limit_token_failures_per_client, window))
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
