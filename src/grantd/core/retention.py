"""What `grantd prune` may delete: rows that no request can use or need any more.

Every token grantd issues is a row, so without pruning the token tables grow by one row a
request for ever. A row may go once it expired before the cut-off (``expired_before``, a moment
in the past), and:

- an access token: always. It is no longer active; introspection and revocation answer for an
  unknown token as for an expired one. The newest issue time among the tokens deleted is kept
  on their key and on their user's grant, which show it as their last use.
- a refresh token or an authorization code: once no token of its family (those descending from
  the same code) is unexpired at the cut-off. While one is, a replayed code or a reused rotated
  refresh token must still be recognised, to revoke that family.
- a user session: always (an expired session is refused as an unknown one is).
- an audit event: only when the operator asks (``audit_before``); the pruning is itself recorded
  first, as ``audit_pruned``.

Deletion runs in batches, each its own short write transaction, so the servers' writes wait
for at most one batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from grantd.core import audit
from grantd.core.context import Context
from grantd.store import retention as store

# Rows a batch deletes: on SQLite the servers' writes wait for at most one batch (measured on a
# slow 2-CPU machine: ~5 ms of access tokens, ~20 ms of refresh tokens with their family checks).
BATCH = 200


class Pruned(NamedTuple):
    """How many rows of each table one run deleted."""

    access_tokens: int
    refresh_tokens: int
    authorization_codes: int
    user_sessions: int
    audit_events: int


async def prune(ctx: Context, *, expired_before: int, audit_before: int | None = None, batch: int = BATCH) -> Pruned:
    """Delete what the rules above allow. ``expired_before`` later than now is taken as now."""
    now = ctx.now()
    before = min(expired_before, now)
    access = await _prune(ctx, store.ACCESS_TOKENS, "", before, batch, keep_last_use=True)
    refresh = await _prune(ctx, store.REFRESH_TOKENS, "", before, batch)
    codes = await _prune(ctx, store.AUTHORIZATION_CODES, "", before, batch)
    sessions = await _prune(ctx, store.USER_SESSIONS, "", before, batch)
    events = 0
    if audit_before is not None:
        audit_before = min(audit_before, now)
        await audit.record_alone(ctx, "audit_pruned", actor=audit.OPERATOR, now=now, before=audit_before)
        events = await _prune(ctx, store.AUDIT_EVENTS, 0, audit_before, batch)
    return Pruned(access, refresh, codes, sessions, events)


async def _prune(ctx: Context, table: Any, after: Any, before: int, batch: int, keep_last_use: bool = False) -> int:
    deleted = 0
    while True:
        async with ctx.db.write() as tx:
            rows = await table.next(tx, after, before, batch)
            if keep_last_use:
                await store.keep_last_use(tx, rows)
            deleted += await table.delete(tx, [row.key for row in rows], before)
        if len(rows) < batch:
            return deleted
        after = rows[-1].key
