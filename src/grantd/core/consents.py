"""A user's view of the apps they have granted access to, and ending that access."""

from __future__ import annotations

from dataclasses import dataclass

from grantd.core import audit
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import NotFound
from grantd.store import codes as code_store
from grantd.store import grants as store
from grantd.store import tokens as token_store


@dataclass(frozen=True, slots=True)
class Grant:
    app_id: str
    app_name: str
    permissions: str
    created_at: int
    updated_at: int
    last_used_at: int | None


async def list_grants(ctx: Context, user: Principal) -> list[Grant]:
    async with ctx.db.read() as conn:
        rows = await store.of_user(conn, user.user_id)
    return [
        Grant(row.app_id, row.app_name, row.permissions, row.created_at, row.updated_at, row.last_used_at)
        for row in rows
    ]


async def revoke_grant(ctx: Context, user: Principal, app_id: str, *, address: str | None = None) -> None:
    """End an app's access: forget the consent, spend outstanding codes, revoke every token of the grant."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.delete(tx, user.user_id, app_id):
            raise NotFound("You have not granted this app access.")
        await code_store.void_unredeemed(tx, user.user_id, app_id, now)
        await token_store.revoke_user_app(tx, user.user_id, app_id, now, now + ctx.settings.access_token_ttl)
        await audit.record(
            ctx, tx, "grant_revoked", actor=user.user_id, user_id=user.user_id, app_id=app_id, address=address, now=now
        )
