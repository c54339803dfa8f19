"""Readiness: whether this process can serve requests. The database answers, its schema is the
newest migration, it takes writes, and a signing key is active; each check says "ok" or a word
for what is wrong, never internals (``/readyz`` shows them to whoever asks).

"Takes writes" is a real committed write (``store.heartbeat``: one row upserted), at most once per
``WRITE_CHECK_INTERVAL`` seconds per process (probes in between see the last outcome), and, on
SQLite, free space on the database's file system: SQLite reuses its write-ahead log's space, so a
small write can still commit on a full disk while any larger one fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from grantd.core import signing_keys
from grantd.core.context import Context
from grantd.crypto import jws
from grantd.store import heartbeat
from grantd.store.availability import DatabaseUnavailable, sqlite_reason
from grantd.store.migrate import is_current

log = logging.getLogger("grantd")

CHECK_TIMEOUT = 3.0
CHECKS = ("database", "migrations", "writable", "signing_key")
# Seconds between two write checks of one process.
WRITE_CHECK_INTERVAL = 5.0
# On SQLite: below this much free space on the database's file system, it is not ready.
MIN_FREE_BYTES = 1 << 20

_last_write: dict[int, tuple[float, str]] = {}  # id(ctx.db) -> (when checked, outcome)


async def readiness(ctx: Context | None) -> dict[str, str]:
    """Each check's outcome: "ok", or a word saying what is wrong. ``ctx`` is None while the
    process is still starting."""
    checks = dict.fromkeys(CHECKS, "unchecked")
    if ctx is None:
        checks["database"] = "starting"
        return checks
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            current = await is_current(ctx.db)
    except DatabaseUnavailable:
        checks["database"] = "unreachable"  # the store logged the outage once
        return checks
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: not ready
        log.warning("readiness: the database did not answer: %s", exc.__class__.__name__)
        checks["database"] = "unreachable"
        return checks
    checks["database"] = "ok"
    checks["migrations"] = "ok" if current else "not_current"
    checks["writable"] = await writable(ctx)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            keys = await signing_keys.list_keys(ctx)
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness: reading the signing keys failed: %s", exc.__class__.__name__)
        checks["signing_key"] = "unreadable"
        return checks
    now = ctx.now()
    active = signing_keys.active_by_algorithm(keys, now).keys() >= set(jws.ALGORITHMS)
    checks["signing_key"] = "ok" if active and ctx.signer is not None else "none_active"
    return checks


async def writable(ctx: Context) -> str:
    """"ok" when the database took a committed write within the last ``WRITE_CHECK_INTERVAL``
    seconds (made now if not), else why not: ``disk_full``, ``read_only``, ``timeout``, …"""
    key = id(ctx.db)
    now = time.monotonic()
    last = _last_write.get(key)
    if last is not None and now - last[0] < WRITE_CHECK_INTERVAL:
        return last[1]
    outcome = _free_space(ctx)
    if outcome == "ok":
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                async with ctx.db.write() as tx:
                    await heartbeat.beat(tx, ctx.now())
        except DatabaseUnavailable as exc:
            outcome = exc.reason
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:  # noqa: BLE001 - any failure to write is "not ready"
            outcome = sqlite_reason(exc) or "write_failed"
            log.warning("readiness: the write check failed: %s", exc.__class__.__name__)
    _last_write[key] = (time.monotonic(), outcome)
    return outcome


def _free_space(ctx: Context) -> str:
    path = ctx.db.sqlite_path
    if path is None:
        return "ok"  # PostgreSQL: its server refuses the write itself when its disk is full
    try:
        stat = os.statvfs(Path(path).parent)
    except OSError:
        return "io_error"
    return "ok" if stat.f_bavail * stat.f_frsize >= MIN_FREE_BYTES else "disk_full"
