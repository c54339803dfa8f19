"""Leaving: a person downloads their data, and deletes their account.

``export`` gathers what grantd holds about a person as one JSON object, described by the JSON
Schema published at ``docs/schemas/account-export.json``: the profile, the apps they own (never a
secret), their consents, their sessions (times only: a session's id stands for its token), and the
audit events about them.

``delete_account`` ends an account in one transaction:

- every app the person owns is disabled, its keys, registration access token and every token it
  holds (other people's too) revoked, and it is handed to the reserved account ``deleted-account``
  (``store.leaving.DELETED_OWNER``): the app stays known to the audit log and to the people who
  consented to it, and no longer names the person;
- every row of every table with a foreign key to the account is deleted: sessions, consents,
  authorization codes, device codes, access and refresh tokens, single-use email links, initial
  access tokens, known devices; then the mail queued to any of their addresses, pushed
  authorization requests that carry one, and the account itself;
- the audit log keeps its events about the person (by account id: no event holds an address),
  and gains ``account_deleted``. Those events are what the audit log must keep; the operator's
  retention setting (``GRANTD_AUDIT_RETENTION_DAYS``) prunes them as any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grantd.core import accounts, audit, permissions as perms, profile
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import InvalidRequest, NotFound
from grantd.store import apps as app_store, grants as grant_store, leaving as store, users as user_store
from grantd.store import tokens as token_store

EXPORT_FORMAT = "grantd-account-export"
EXPORT_VERSION = 1
# What a person types to confirm the deletion of their account on the account page.
CONFIRMATION = "DELETE"


@dataclass(frozen=True, slots=True)
class OwnedApp:
    app_id: str
    name: str
    disabled: bool


async def owned_apps(ctx: Context, user_id: str) -> list[OwnedApp]:
    """The apps that deleting the account disables (those disabled already included)."""
    async with ctx.db.read() as conn:
        rows = await app_store.owned(conn, user_id)
    return [OwnedApp(row.id, row.name, row.disabled_at is not None) for row in rows]


async def export(ctx: Context, user_id: str, *, address: str | None = None) -> dict[str, Any]:
    """Everything grantd holds about the account, as ``docs/schemas/account-export.json`` describes
    it. Audited (``account_exported``). NotFound when there is no such account."""
    async with ctx.db.read() as conn:
        row = await user_store.by_id(conn, user_id)
        if row is None:
            raise NotFound("There is no such account.")
        apps = await app_store.owned(conn, user_id)
        grants = await grant_store.of_user(conn, user_id)
        sessions = await store.sessions_of(conn, user_id)
    person = profile._profile(row)
    events = await audit.events_for_user(ctx, user_id, every=True)
    now = ctx.now()
    data = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "issuer": ctx.settings.issuer,
        "exported_at": now,
        "profile": {
            "id": row.id,
            "email": row.email,
            "email_verified": person.email_verified,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            **person.fields(),
        },
        "apps": [
            {
                "app_id": app.id,
                "name": app.name,
                "client_type": app.client_type,
                "redirect_uris": app_store.redirect_uris_of(app),
                "permissions": perms.parse(app.permissions),
                "created_at": app.created_at,
                "updated_at": app.updated_at,
                "disabled_at": app.disabled_at,
            }
            for app in apps
        ],
        "consents": [
            {
                "app_id": grant.app_id,
                "app_name": grant.app_name,
                "permissions": perms.parse(grant.permissions),
                "granted_at": grant.created_at,
                "updated_at": grant.updated_at,
                "last_used_at": grant.last_used_at,
            }
            for grant in grants
        ],
        "sessions": [
            {"issued_at": s.issued_at, "expires_at": s.expires_at, "revoked_at": s.revoked_at} for s in sessions
        ],
        "audit_events": [
            {
                "occurred_at": event.occurred_at,
                "event": event.event,
                "app_id": event.app_id,
                "actor": event.actor,
                "address": event.address,
                "detail": json.loads(json.dumps(event.detail)),
            }
            for event in events
        ],
    }
    await audit.record_alone(ctx, "account_exported", actor=user_id, user_id=user_id, address=address)
    return data


async def export_signed_in_now(ctx: Context, user: Principal, *, address: str | None = None) -> dict[str, Any]:
    """``export`` for a user token signed in within ``accounts.FRESH_SIGN_IN`` seconds (a password
    just typed); an older one gets InsufficientUserAuthentication: sign in again."""
    accounts._require_fresh_sign_in(ctx, user, "downloading the account's data")
    return await export(ctx, user.user_id, address=address)


async def delete_account(
    ctx: Context, user_id: str, actor: str, *, address: str | None = None, event: str = "account_deleted"
) -> list[str]:
    """Delete the account ``user_id`` (as the module says), in one transaction; ``actor``: the
    account itself, an admin or ``audit.OPERATOR`` (``event``: ``user_deleted`` when it is not
    the account's own doing, ``core.admin.delete_user``). The ids of the apps disabled. NotFound
    when there is no such account; InvalidRequest for a reserved one."""
    if user_id in (app_store.SELF_REGISTERED, store.DELETED_OWNER):
        raise InvalidRequest("This account is reserved: it cannot be deleted.")
    now = ctx.now()
    async with ctx.db.write() as tx:
        if await user_store.by_id(tx, user_id) is None:
            raise NotFound("There is no such account.")
        addresses = await store.addresses_of(tx, user_id)
        app_ids = await store.hand_over_apps(tx, user_id, now)
        for app_id in app_ids:
            await audit.record(ctx, tx, "app_disabled", actor=actor, user_id=user_id, app_id=app_id, address=address, now=now, reason="account_deleted")
        # Every access token issued for the person ends before the rows that name them go: their
        # families are denied (rows named by a code's hash, not by the person).
        await token_store.revoke_user(tx, user_id, now, now + ctx.settings.access_token_ttl)
        await store.delete_personal_rows(tx, user_id, addresses)
        await audit.record(ctx, tx, event, actor=actor, user_id=user_id, address=address, now=now)
    return app_ids


async def delete_own_account(
    ctx: Context, user: Principal, password: str, confirmation: str, *, address: str | None = None
) -> list[str]:
    """The account page's deletion: ``confirmation`` must be ``CONFIRMATION`` (InvalidRequest,
    field "confirmation") and the password right, checked like a log-in (InvalidGrant, RateLimited)."""
    if confirmation.strip() != CONFIRMATION:
        raise InvalidRequest(f"Type {CONFIRMATION} to confirm.", field="confirmation")
    row = await accounts._account(ctx, user)
    await accounts._check_current_password(ctx, user, row, password, address)
    return await delete_account(ctx, user.user_id, user.user_id, address=address)
