"""Prometheus metrics: requests by route template and status, latency, tokens issued by grant
type, failures by error code, rate-limit hits, and the database connection pool.

Served at ``/metrics`` on the public port only when ``GRANTD_METRICS_ENABLED`` is true, and/or
on a port of its own with ``GRANTD_METRICS_PORT``. With several worker processes
(``grantd serve --workers N``) the values are shared through prometheus-client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``; ``grantd serve`` sets one up when it is unset), so every
scrape shows the sum over all workers.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client import Metric


class Pooled(Protocol):
    """A database whose connection pool the collector reads (``store.db.Database``): the store
    depends on the metrics, never the metrics on the store."""

    def pool_status(self) -> tuple[int, int, int, int] | None: ...


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The *_created series double the output and tell a scraper nothing it needs.
disable_created_metrics()
CONTENT_TYPE = CONTENT_TYPE_LATEST

requests = Counter(
    "grantd_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
latency = Histogram(
    "grantd_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
tokens_issued = Counter(
    "grantd_tokens_issued",
    "Access tokens issued by the token endpoints, by grant type.",
    ["grant_type"],
)
errors = Counter(
    "grantd_errors",
    "Requests refused or failed, by error code (invalid_grant, invalid_client, rate_limited, server_error, ...).",
    ["error"],
)
rate_limited = Counter(
    "grantd_rate_limit_hits",
    "Requests refused with 429 by a rate limit, by route template.",
    ["route"],
)
database_available = Gauge(
    "grantd_database_available",
    "1 while the database answers, 0 from the first failure of an outage until a block succeeds again "
    "(with several workers: the lowest of them).",
    ["database"],
    multiprocess_mode="livemin",
)
database_unavailable = Counter(
    "grantd_database_unavailable",
    "Database blocks that failed because the database did not answer, by reason (refused, timeout, "
    "connection_lost, disk_full, ...): each became a 503 temporarily_unavailable.",
    ["reason"],
)
redis_available = Gauge(
    "grantd_redis_available",
    "1 while Redis answers for a use of it (rate limits, DPoP replays), 0 while that use's circuit breaker is "
    "open (the database stands in).",
    ["use"],
    multiprocess_mode="livemin",
)

# Routes are labelled by their template ("/v1/apps/{app_id}"); anything unrouted shares one label.
UNMATCHED = "unmatched"


class PoolCollector(Collector):
    """The connection pools of the databases this process serves from, read at scrape time."""

    def __init__(self) -> None:
        self._databases: weakref.WeakSet[Pooled] = weakref.WeakSet()

    def watch(self, db: Pooled) -> None:
        self._databases.add(db)

    def forget(self, db: Pooled) -> None:
        self._databases.discard(db)

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("grantd_db_pool_size", "Connections the database pool keeps open at most (without overflow).")
        used = GaugeMetricFamily("grantd_db_pool_checked_out", "Database connections in use by requests now.")
        idle = GaugeMetricFamily("grantd_db_pool_idle", "Open database connections waiting in the pool.")
        overflow = GaugeMetricFamily("grantd_db_pool_overflow", "Connections open beyond the pool size now.")
        totals = [0, 0, 0, 0]
        for db in list(self._databases):
            # On PostgreSQL, the pool that requests are served from (store.pg_pool.Pool); on SQLite, its two
            # connections (the writer in use while a transaction is open).
            values = db.pool_status()
            if values is None:  # a pool kind without these counters
                continue
            totals = [a + b for a, b in zip(totals, values)]
        for family, value in zip((size, used, idle, overflow), totals):
            family.add_metric([], value)
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


pools = PoolCollector()


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def exposition_registry() -> CollectorRegistry:
    """The registry a scrape reads: this process's, or the sum over all workers in multiprocess mode."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        return registry
    return _LOCAL


def _local_registry() -> CollectorRegistry:
    # The default registry holds the metrics above and the process, platform and GC collectors.
    # In multiprocess mode a pool belongs to one worker: a scrape answered by any worker could not sum them.
    if not multiprocess():
        REGISTRY.register(pools)
    return REGISTRY


_LOCAL = _local_registry()


def render() -> bytes:
    return generate_latest(exposition_registry())
