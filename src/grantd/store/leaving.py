"""The statements of an account's export and deletion (grantd.core.leaving)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Row

from grantd.store.schema import (
    app_keys, apps, email_tokens, mail_outbox, metadata, pushed_authorization_requests,
    refresh_tokens, user_sessions, users,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

# The reserved account that owns the apps of deleted accounts, disabled (migration 0025).
DELETED_OWNER = "deleted-account"


async def sessions_of(conn: AsyncConnection, user_id: str) -> Sequence[Row]:
    query = (
        select(user_sessions.c.issued_at, user_sessions.c.expires_at, user_sessions.c.revoked_at)
        .where(user_sessions.c.user_id == user_id)
        .order_by(user_sessions.c.issued_at.desc())
    )
    return (await conn.execute(query)).all()


async def addresses_of(conn: AsyncConnection, user_id: str) -> set[str]:
    """Every address the account has or was asked to have (a pending change's)."""
    found = {row.email for row in (await conn.execute(select(users.c.email).where(users.c.id == user_id))).all()}
    query = select(email_tokens.c.email).where(email_tokens.c.user_id == user_id, email_tokens.c.email.isnot(None))
    return found | {row.email for row in (await conn.execute(query)).all()}


async def hand_over_apps(conn: AsyncConnection, owner_id: str, now: int) -> list[str]:
    """Disable every app ``owner_id`` owns, revoke its keys, its registration access token and every
    token it holds, and give it to ``DELETED_OWNER``; the apps' ids."""
    app_ids = [row.id for row in (await conn.execute(select(apps.c.id).where(apps.c.owner_id == owner_id))).all()]
    if not app_ids:
        return []
    owned = apps.c.id.in_(app_ids)
    await conn.execute(update(apps).where(owned, apps.c.disabled_at.is_(None)).values(disabled_at=now, updated_at=now))
    await conn.execute(
        update(apps).where(owned).values(owner_id=DELETED_OWNER, registration_access_token_hash=None, updated_at=now)
    )
    await conn.execute(
        update(app_keys).where(app_keys.c.app_id.in_(app_ids), app_keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    # Their access tokens end with the apps' disabling (and, were one enabled again, by
    # store.tokens.revoke_app); their refresh tokens are revoked.
    await conn.execute(
        update(refresh_tokens).where(refresh_tokens.c.app_id.in_(app_ids), refresh_tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return app_ids


async def delete_personal_rows(conn: AsyncConnection, user_id: str, addresses: set[str]) -> None:
    """Delete every row that names the user, in every table with a foreign key to ``users`` (the
    apps they own excepted: ``hand_over_apps`` first), then the messages to their addresses,
    pushed requests that carry one (a ``login_hint``), and the user."""
    for table in metadata.sorted_tables:
        for column in table.columns:
            if table is apps and column.name == "owner_id":
                continue
            if any(fk.column.table is users for fk in column.foreign_keys):
                await conn.execute(delete(table).where(column == user_id))
    if addresses:
        await conn.execute(delete(mail_outbox).where(mail_outbox.c.recipient.in_(sorted(addresses))))
        parameters = pushed_authorization_requests.c.parameters
        await conn.execute(
            delete(pushed_authorization_requests).where(
                or_(*(parameters.contains(address, autoescape=True) for address in addresses))
            )
        )
    await conn.execute(delete(users).where(users.c.id == user_id))
