"""What `grantd prune` may delete: rows that no request can use or need any more.

Access tokens have no row; refresh tokens, codes and the deny-lists that end access tokens early
do, so without pruning those tables grow for ever. A row may go once it expired before the
cut-off (``expired_before``, a moment in the past), and:

- a deny-list row (a revoked access token's jti, a revoked family): always. Every access token it
  denied has expired by then (a jti is kept until its token's exp, a family until revocation +
  ``access_token_ttl``).
- a refresh token or an authorization code: once no token of its family (those descending from
  the same code) may be unexpired at the cut-off: no refresh token of the family unexpired less
  than ``access_token_ttl`` before it (an access token issued by it lives that long), and the
  code redeemed more than ``access_token_ttl`` before it. While one may be, a replayed code or a
  reused rotated refresh token must still be recognised, to revoke that family. The newest time
  among the rows deleted a grant was used at (a refresh token's issue, a code's redemption) is
  kept on the user's grant, which shows it as its last use with what remains.
- a user session: always (an expired session is refused as an unknown one is).
- a pushed authorization request (RFC 9126): always (an expired request_uri is refused as an
  unknown one is).
- a device authorization request (RFC 8628): always (an expired device code is refused as
  ``expired_token`` until then, as an unknown one after; its tokens' family is its hash, which
  they carry themselves); its redemption is kept on the grant as a code's is.
- a client assertion's ``jti`` (RFC 7523 private_key_jwt): always (an assertion past its ``exp``
  is refused whatever its ``jti``); each app's are also deleted as it records a new one.
- a DPoP proof's record (RFC 9449): always (a proof past it fails the ``iat`` check whatever its ``jti``).
- an audit event: only when the operator asks (``audit_before``, or ``GRANTD_AUDIT_RETENTION_DAYS``
  for the servers); the pruning is itself recorded first, as ``audit_pruned``, when there is
  anything to prune.

Deletion runs in batches, each its own short write transaction, so the servers' writes wait
for at most one batch. The servers prune by themselves every ``GRANTD_PRUNE_INTERVAL``
(``keep_pruned``): one process of the deployment each time, in smaller batches with pauses
between them, so that its own requests wait little.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, NamedTuple

from grantd.core import audit
from grantd.core.context import Context
from grantd.store import retention as store
from grantd.store.availability import DatabaseUnavailable

# Rows a batch reads (and deletes, of those that may go): on SQLite the servers' writes wait for at
# most one batch (on a slow 2-CPU machine, 200 expired refresh tokens with their family checks
# took 26 ms, the longest; a row that stays costs a few µs).
BATCH = 200
# In a server: smaller batches, each followed by a pause of PACE times its duration (a prune then
# takes at most a fifth of the process's time while it runs).
SERVER_BATCH = 50
PACE = 4
# What expired less than this long ago is kept, by default.
KEEP_EXPIRED_FOR = 86400
TASK = "prune"

log = logging.getLogger("grantd")


class Pruned(NamedTuple):
    """How many rows of each table one run deleted."""

    revoked_access_tokens: int
    refresh_tokens: int
    authorization_codes: int
    user_sessions: int
    audit_events: int
    pushed_authorization_requests: int = 0
    client_assertion_jtis: int = 0
    device_codes: int = 0
    dpop_proof_jtis: int = 0
    revoked_families: int = 0


async def prune(
    ctx: Context, *, expired_before: int | None = None, audit_before: int | None = None, paced: bool = False
) -> Pruned:
    """Delete what the rules above allow: what expired before ``expired_before`` (default: a day
    ago; later than now is taken as now), and audit events before ``audit_before`` if given.
    ``paced``: in SERVER_BATCH batches with pauses between them, as a server prunes."""
    now = ctx.now()
    before = now - KEEP_EXPIRED_FOR if expired_before is None else min(expired_before, now)
    batch = SERVER_BATCH if paced else BATCH
    denied = await _prune(ctx, store.REVOKED_ACCESS_TOKENS, "", before, batch, paced)
    families = await _prune(ctx, store.REVOKED_FAMILIES, "", before, batch, paced)
    refresh = await _prune(ctx, store.REFRESH_TOKENS, "", before, batch, paced, keep_last_use=True)
    codes = await _prune(ctx, store.AUTHORIZATION_CODES, "", before, batch, paced, keep_last_use=True)
    sessions = await _prune(ctx, store.USER_SESSIONS, "", before, batch, paced)
    pushed = await _prune(ctx, store.PUSHED_REQUESTS, "", before, batch, paced)
    jtis = await _prune(ctx, store.ASSERTION_JTIS, "", before, batch, paced)
    devices = await _prune(ctx, store.DEVICE_CODES, "", before, batch, paced, keep_last_use=True)
    proofs = await _prune(ctx, store.DPOP_PROOFS, "", before, batch, paced)
    events = 0
    if audit_before is not None:
        audit_before = min(audit_before, now)
        async with ctx.db.read() as conn:
            due = await store.any_audit_event_before(conn, audit_before)
        if due:
            await audit.record_alone(ctx, "audit_pruned", actor=audit.OPERATOR, now=now, before=audit_before)
            events = await _prune(ctx, store.AUDIT_EVENTS, 0, audit_before, batch, paced)
    return Pruned(denied, refresh, codes, sessions, events, pushed, jtis, devices, proofs, families)


async def _prune(
    ctx: Context, table: Any, after: Any, before: int, batch: int, paced: bool, keep_last_use: bool = False
) -> int:
    deleted = 0
    while True:
        started = time.perf_counter()
        async with ctx.db.write() as tx:
            ttl = ctx.settings.access_token_ttl
            rows = await table.next(tx, after, before, batch, ttl)
            going = [row for row in rows if row.prunable]
            if keep_last_use:
                await store.keep_last_use(tx, going)
            deleted += await table.delete(tx, [row.key for row in going], before, ttl)
        if len(rows) < batch:
            return deleted
        after = rows[-1].key
        if paced:
            await asyncio.sleep(PACE * (time.perf_counter() - started))


async def keep_pruned(ctx: Context) -> None:
    """A server's task, when ``prune_interval`` is set: every now and then, take the prune's turn
    if it is due (``store.claim``: one process of the deployment per interval) and prune, paced."""
    interval = ctx.settings.prune_interval
    while True:
        # Processes started together wake apart; each looks several times an interval, so the
        # deployment prunes every interval to 1.5 intervals whichever processes are up.
        await asyncio.sleep(interval * random.uniform(0.25, 0.5))
        try:
            now = ctx.now()
            async with ctx.db.write() as tx:
                mine = await store.claim(tx, TASK, now, now + interval)
            if mine:
                started = time.perf_counter()
                days = ctx.settings.audit_retention_days
                pruned = await prune(ctx, audit_before=now - days * 86400 if days else None, paced=True)
                log.info(
                    "pruned expired rows in %.1f s: %s", time.perf_counter() - started,
                    ", ".join(f"{count} {table}" for table, count in pruned._asdict().items() if count) or "none",
                )
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable:
            pass  # logged once by the store, when the outage began; the next turn tries again
        except Exception:  # noqa: BLE001 - keep serving; the next turn tries again
            log.exception("pruning expired rows failed")
