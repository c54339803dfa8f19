"""The statements of the device authorization grant (RFC 8628): ``core.device`` holds the rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from grantd.store import audit as audit_store
from grantd.store import tokens as token_store
from grantd.store.db import run, upsert
from grantd.store.schema import device_codes as devices

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

PENDING, APPROVED, DENIED = "pending", "approved", "denied"


async def insert_request(conn: AsyncConnection, **row: Any) -> bool:
    """A new request (``row``: its columns), pending. False, and nothing written, when its user
    code's hash is taken already (the caller draws another user code)."""
    statement = upsert(conn, devices).values(status=PENDING, **row).on_conflict_do_nothing()
    result = await conn.execute(statement)
    return result.rowcount == 1


async def pending_by_user_code(conn: AsyncConnection, user_code_hash: str, now: int) -> Row | None:
    """The request a user code names, if it is still waiting for a decision and unexpired."""
    query = select(devices).where(
        devices.c.user_code_hash == user_code_hash,
        devices.c.status == PENDING,
        devices.c.expires_at > now,
    )
    return (await conn.execute(query)).first()


async def decide(
    conn: AsyncConnection, device_code_hash: str, *, approved: bool, user_id: str, auth_time: int | None, now: int,
    amr: str | None = None,
) -> bool:
    """Record the person's decision on a pending, unexpired request: one UPDATE, so of two
    decisions at once (two tabs) exactly one is taken. Whether this one was."""
    result = await conn.execute(
        update(devices)
        .where(
            devices.c.device_code_hash == device_code_hash,
            devices.c.status == PENDING,
            devices.c.expires_at > now,
        )
        .values(status=APPROVED if approved else DENIED, user_id=user_id, auth_time=auth_time, amr=amr, decided_at=now)
    )
    return result.rowcount == 1


async def for_poll(conn: AsyncConnection, device_code_hash: str) -> Row | None:
    """The request a device code names, locked until the transaction ends (PostgreSQL ``FOR
    UPDATE``; a SQLite write transaction holds the whole database), so that concurrent polls are
    judged one after the other."""
    query = select(devices).where(devices.c.device_code_hash == device_code_hash).with_for_update()
    return (await conn.execute(query)).first()


async def polled(conn: AsyncConnection, device_code_hash: str, now: int, interval: int) -> None:
    """Record a poll of a pending request, and the interval the device must keep from now on."""
    await conn.execute(
        update(devices)
        .where(devices.c.device_code_hash == device_code_hash)
        .values(last_polled_at=now, interval=interval)
    )


async def redeem(
    conn: AsyncConnection,
    device_code_hash: str,
    app_id: str,
    now: int,
    *,
    refresh: dict[str, Any] | None,
    audit: dict[str, Any],
) -> bool:
    """Spend an approved, unexpired, unredeemed device code of ``app_id`` and write what it issues
    (the refresh token when given and the audit row; the access token has no row) in the caller's
    transaction.
    The UPDATE's conditions make it exactly once: of concurrent redemptions one spends the code,
    the others spend nothing and write nothing. Whether this call spent it."""
    result = await conn.execute(
        update(devices)
        .where(
            devices.c.device_code_hash == device_code_hash,
            devices.c.app_id == app_id,
            devices.c.status == APPROVED,
            devices.c.redeemed_at.is_(None),
            devices.c.expires_at > now,
        )
        .values(redeemed_at=now)
    )
    if result.rowcount != 1:
        return False
    if refresh is not None:
        await run(conn, token_store.INSERT_REFRESH, **refresh)
    await audit_store.insert_event(conn, **audit)
    return True
