"""Readiness: whether this process can serve requests. The database answers, its schema is the
newest migration, and a signing key is active; each check says "ok" or a word for what is wrong,
never internals (``/readyz`` shows them to whoever asks)."""

from __future__ import annotations

import asyncio
import logging

from grantd.core import signing_keys
from grantd.core.context import Context
from grantd.crypto import jws
from grantd.store.migrate import is_current

log = logging.getLogger("grantd")

CHECK_TIMEOUT = 3.0
CHECKS = ("database", "migrations", "signing_key")


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
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: not ready
        log.warning("readiness: the database did not answer: %s", exc.__class__.__name__)
        checks["database"] = "unreachable"
        return checks
    checks["database"] = "ok"
    checks["migrations"] = "ok" if current else "not_current"
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
