"""The statements of `grantd prune`: rows that can no longer matter, found and deleted in batches.

Each batch reads the next ``limit`` rows of one table in primary-key order from where the last
one stopped (keyset pagination: a run reads each table once, and a batch costs the same however
few of its rows may go), with whether each may go, and deletes those, re-checking the condition
in the DELETE itself. What may go is ``core.retention``'s rule; these are its statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, ColumnElement, Table, and_, bindparam, delete, exists, not_, or_, select, update

from grantd.store.db import later_of, upsert
from grantd.store.schema import (
    audit_events, authorization_codes, client_assertion_jtis, device_codes, dpop_proof_jtis, grants, maintenance,
    pushed_authorization_requests, refresh_tokens, revoked_access_tokens, revoked_families, user_sessions,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


# access_token_ttl, in seconds: how long after its issue an access token may still be unexpired.
_TTL = bindparam("ttl", type_=BigInteger)


def _family_alive(code_hash: Column[Any], before: Any) -> ColumnElement[bool]:
    """Whether a token of the family descending from ``code_hash`` may be unexpired at ``before``:
    one of its refresh tokens, or an access token issued by its code's redemption or by one of its
    refresh tokens (at the latest when that one expired; access tokens have no row). Its code and
    rotated refresh tokens are then still needed to detect a replay and revoke it."""
    live_refresh = refresh_tokens.alias("live_refresh")
    family_code = authorization_codes.alias("family_code")
    return or_(
        exists().where(live_refresh.c.code_hash == code_hash, live_refresh.c.expires_at + _TTL >= before),
        exists().where(family_code.c.code_hash == code_hash, family_code.c.redeemed_at + _TTL >= before),
    )


class _Batch:
    """One table's walk: ``key`` orders it; ``condition`` says whether a row may go; ``columns``
    are read back for the caller."""

    def __init__(self, table: Table, key: Column[Any], condition: ColumnElement[bool], columns: Sequence[Column[Any]] = ()) -> None:
        self._select = (
            select(key.label("key"), condition.label("prunable"), *columns)
            .where(key > bindparam("after"))
            .order_by(key)
            .limit(bindparam("limit"))
        )
        self._delete = delete(table).where(key.in_(bindparam("keys", expanding=True)), condition)

    async def next(self, conn: AsyncConnection, after: Any, before: int, limit: int, ttl: int = 0) -> Sequence[Any]:
        """The ``limit`` rows after key ``after`` (fewer at the end), each with ``prunable``:
        whether it may go (expired before ``before``, and what else the table's condition says,
        ``ttl`` the access tokens' lifetime)."""
        params = {"after": after, "before": before, "limit": limit, "ttl": ttl}
        return (await conn.execute(self._select, params)).all()  # type: ignore[no-any-return]

    async def delete(self, conn: AsyncConnection, keys: Sequence[Any], before: int, ttl: int = 0) -> int:
        if not keys:
            return 0
        return (await conn.execute(self._delete, {"keys": list(keys), "before": before, "ttl": ttl})).rowcount  # type: ignore[no-any-return]


_BEFORE = bindparam("before")

# The deny-lists of access tokens: past expires_at no token they deny is unexpired any more.
REVOKED_ACCESS_TOKENS = _Batch(revoked_access_tokens, revoked_access_tokens.c.jti, revoked_access_tokens.c.expires_at < _BEFORE)
REVOKED_FAMILIES = _Batch(revoked_families, revoked_families.c.code_hash, revoked_families.c.expires_at < _BEFORE)
# Refresh tokens, codes and device codes read back who used what when (``keep_last_use``).
REFRESH_TOKENS = _Batch(
    refresh_tokens,
    refresh_tokens.c.token_hash,
    and_(refresh_tokens.c.expires_at < _BEFORE, not_(_family_alive(refresh_tokens.c.code_hash, _BEFORE))),
    (refresh_tokens.c.user_id, refresh_tokens.c.app_id, refresh_tokens.c.issued_at.label("used_at")),
)
AUTHORIZATION_CODES = _Batch(
    authorization_codes,
    authorization_codes.c.code_hash,
    and_(authorization_codes.c.expires_at < _BEFORE, not_(_family_alive(authorization_codes.c.code_hash, _BEFORE))),
    (authorization_codes.c.user_id, authorization_codes.c.app_id, authorization_codes.c.redeemed_at.label("used_at")),
)
USER_SESSIONS = _Batch(user_sessions, user_sessions.c.jti, user_sessions.c.expires_at < _BEFORE)
PUSHED_REQUESTS = _Batch(
    pushed_authorization_requests,
    pushed_authorization_requests.c.request_hash,
    pushed_authorization_requests.c.expires_at < _BEFORE,
)
DEVICE_CODES = _Batch(
    device_codes,
    device_codes.c.device_code_hash,
    device_codes.c.expires_at < _BEFORE,
    (device_codes.c.user_id, device_codes.c.app_id, device_codes.c.redeemed_at.label("used_at")),
)
# The jti of client assertions (RFC 7523): past expires_at no replay of theirs can pass exp any more.
# Its key is two columns: walked by their concatenation (app ids are uuids, no space in them).
ASSERTION_JTIS = _Batch(
    client_assertion_jtis,
    client_assertion_jtis.c.app_id + " " + client_assertion_jtis.c.jti,
    client_assertion_jtis.c.expires_at < _BEFORE,
)
# DPoP proofs (RFC 9449): past expires_at no replay of theirs can pass the iat check any more.
DPOP_PROOFS = _Batch(dpop_proof_jtis, dpop_proof_jtis.c.proof_hash, dpop_proof_jtis.c.expires_at < _BEFORE)
AUDIT_EVENTS = _Batch(audit_events, audit_events.c.id, audit_events.c.occurred_at < _BEFORE)

_GRANT_USED = (
    update(grants)
    .where(grants.c.user_id == bindparam("of_user"), grants.c.app_id == bindparam("of_app"))
    .values(last_used_at=later_of(bindparam("at", type_=BigInteger), grants.c.last_used_at))
)


async def keep_last_use(conn: AsyncConnection, rows: Sequence[Any]) -> None:
    """Before ``rows`` (of ``REFRESH_TOKENS``, ``AUTHORIZATION_CODES`` or ``DEVICE_CODES``) are
    deleted: fold the newest time among them a grant was used at (``used_at``: a refresh token's
    issue, a code's redemption) into their users' grants' ``last_used_at``, which
    ``store.grants.of_user`` shows with what remains."""
    by_grant: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.user_id is not None and row.used_at is not None:
            grant = (row.user_id, row.app_id)
            by_grant[grant] = max(by_grant.get(grant, 0), row.used_at)
    for (user_id, app_id), at in sorted(by_grant.items()):
        await conn.execute(_GRANT_USED, {"of_user": user_id, "of_app": app_id, "at": at})


_AUDIT_BEFORE = select(audit_events.c.id).where(audit_events.c.occurred_at < bindparam("before")).limit(1)


async def any_audit_event_before(conn: AsyncConnection, before: int) -> bool:
    return (await conn.execute(_AUDIT_BEFORE, {"before": before})).first() is not None


async def claim(conn: AsyncConnection, task: str, now: int, next_due: int) -> bool:
    """Whether this caller takes ``task``'s turn: it was due by ``now`` (or never ran), and is now
    due at ``next_due`` for everyone (one atomic upsert: of concurrent callers, one wins)."""
    stmt = upsert(conn, maintenance).values(task=task, due_at=next_due)
    stmt = stmt.on_conflict_do_update(
        index_elements=[maintenance.c.task],
        set_={"due_at": stmt.excluded.due_at},
        where=maintenance.c.due_at <= now,
    ).returning(maintenance.c.task)
    return (await conn.execute(stmt)).first() is not None
