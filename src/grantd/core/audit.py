"""The audit log: who did what, when, from which address, and never a secret.

``record`` writes one event inside the caller's write transaction, so the event commits or
rolls back with the change it describes. The detail holds ids and permissions only: its keys
are checked against an allow-list, so a secret, token, code, password or hash cannot slip in.

Not audited, because they are the hot paths and carry no decision worth a row: the
client_credentials grant, refresh-token rotation that succeeds, introspection, and the
verification of user tokens. A reused refresh token (its family revoked) is audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from grantd.core.context import Context
from grantd.store import audit as store

OPERATOR = "operator"  # the actor of an operator's CLI command
ANONYMOUS = "anonymous"  # the actor of a failed log-in: nobody proved who they are

EVENTS = frozenset(
    {
        "signup",
        "login_succeeded",
        "login_failed",
        "password_changed",
        "second_factor_enrolled",
        "second_factor_removed",
        "password_reset_requested",
        "password_reset",
        "email_verification_sent",
        "email_verified",
        "email_change_requested",
        "email_changed",
        "profile_updated",
        "consent_granted",
        "grant_revoked",
        "app_created",
        "app_updated",
        "app_disabled",
        "key_created",
        "key_revoked",
        "initial_access_token_created",
        "initial_access_token_revoked",
        "code_issued",
        "code_redeemed",
        "code_retried",
        "code_replayed",
        "refresh_token_reused",
        "device_approved",
        "device_denied",
        "device_code_redeemed",
        "signing_key_rotated",
        "audit_pruned",
        "resource_registered",
        "resource_deleted",
        "account_exported",
        "account_deleted",
        "security_notice_sent",
        "passkey_added",
        "passkey_removed",
        "user_locked",
        "user_unlocked",
        "user_deleted",
        "sessions_revoked",
        "admin_granted",
        "admin_revoked",
        "app_enabled",
    }
)
# What a detail may carry: identifiers, permissions, names of changed fields, a reason. Nothing else.
DETAIL_KEYS = frozenset(
    {"jti", "key_id", "kid", "algorithm", "permissions", "fields", "client_type", "reason", "activates_at", "family_revoked", "before",
     "resource", "token_id"}
)
LIMIT_DEFAULT = 100
LIMIT_MAX = 500


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    occurred_at: int
    event: str
    user_id: str | None
    app_id: str | None
    actor: str
    address: str | None
    detail: dict[str, Any]


def entry(
    ctx: Context,
    event: str,
    *,
    actor: str,
    user_id: str | None = None,
    app_id: str | None = None,
    address: str | None = None,
    now: int | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """The audit row of ``event``, checked, as the values of ``audit_events``' columns.

    ``record`` writes it; a store statement that writes it together with the change it
    describes (the code redemption on PostgreSQL) takes it as it is."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    unknown = set(detail) - DETAIL_KEYS
    if unknown:
        raise ValueError(f"audit detail may not carry {sorted(unknown)}")
    return {
        "occurred_at": ctx.now() if now is None else now,
        "event": event,
        "actor": actor,
        "user_id": user_id,
        "app_id": app_id,
        "address": address[:64] if address else None,
        "detail": orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode(),
    }


async def record(ctx: Context, tx, event: str, **fields: Any) -> None:  # type: ignore[no-untyped-def]
    """Record ``event`` in ``tx`` (one INSERT): it commits or rolls back with the caller's change.
    ``fields`` are ``entry``'s."""
    await store.insert_event(tx, **entry(ctx, event, **fields))


async def record_alone(ctx: Context, event: str, **fields: Any) -> None:
    """Record an event of a failure that has no write transaction of its own: one small write."""
    async with ctx.db.write() as tx:
        await record(ctx, tx, event, **fields)


def _event(row: Any) -> AuditEvent:
    try:
        detail = json.loads(row.detail) if row.detail else {}
    except ValueError:
        detail = {}
    return AuditEvent(
        row.id, row.occurred_at, row.event, row.user_id, row.app_id, row.actor, row.address,
        detail if isinstance(detail, dict) else {},
    )


def _limit(limit: int | None) -> int:
    return LIMIT_DEFAULT if limit is None else max(1, min(limit, LIMIT_MAX))


async def events_for_user(
    ctx: Context, user_id: str, *, since: int | None = None, limit: int | None = None, every: bool = False
) -> list[AuditEvent]:
    """The events about the user and about the apps they own, newest first (all of them with
    ``every``, for the account's export; else at most ``limit``).

    On an event another user caused at one of their apps (a consent, a code issued), the
    other user's client address is not shown to the developer. On an event at another's app (a
    code redeemed for the user), the app's key is not shown to the user: a key id is the app's
    developer's to see.
    """
    async with ctx.db.read() as conn:
        rows = await store.about_user(conn, user_id, since, None if every else _limit(limit))
    events = []
    for row in rows:
        event = _event(row)
        if not row.app_owned and "key_id" in event.detail:
            detail = {name: value for name, value in event.detail.items() if name != "key_id"}
            event = AuditEvent(
                event.id, event.occurred_at, event.event, event.user_id, event.app_id, event.actor, event.address, detail
            )
        if event.user_id not in (None, user_id) and event.actor == event.user_id:
            event = AuditEvent(
                event.id, event.occurred_at, event.event, event.user_id, event.app_id, event.actor, None, event.detail
            )
        events.append(event)
    return events


async def all_events(ctx: Context, *, since: int | None = None, limit: int | None = None) -> list[AuditEvent]:
    """Every event, newest first: the operator's view (``grantd audit``)."""
    async with ctx.db.read() as conn:
        return [_event(row) for row in await store.every(conn, since, limit)]
