"""The second factor's rows: a user's authenticator app (``totp_credentials``) and recovery codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row

from grantd.store.schema import recovery_codes, totp_credentials

if TYPE_CHECKING:  # SQLAlchemy's asyncio extension imports its ORM: ~7 MB and ~0.2 s a process
    from sqlalchemy.ext.asyncio import AsyncConnection


async def totp_of(conn: AsyncConnection, user_id: str) -> Row | None:
    result = await conn.execute(select(totp_credentials).where(totp_credentials.c.user_id == user_id))
    return result.first()


async def put_pending_totp(conn: AsyncConnection, user_id: str, sealed_secret: bytes, now: int) -> None:
    """A new, unconfirmed secret; it replaces an unconfirmed one, never a confirmed one."""
    await conn.execute(
        delete(totp_credentials).where(totp_credentials.c.user_id == user_id, totp_credentials.c.confirmed_at.is_(None))
    )
    await conn.execute(insert(totp_credentials).values(user_id=user_id, sealed_secret=sealed_secret, created_at=now, last_step=0))


async def accept_step(conn: AsyncConnection, user_id: str, step: int, *, confirm_at: int | None = None) -> bool:
    """Record ``step`` as the last code accepted, if it is later than the last one: False when a
    code of this step (or a later one) was accepted already (a replay). ``confirm_at``: the
    enrolment's first code, which confirms the secret."""
    values: dict[str, int] = {"last_step": step}
    where = [totp_credentials.c.user_id == user_id, totp_credentials.c.last_step < step]
    if confirm_at is not None:
        values["confirmed_at"] = confirm_at
        where.append(totp_credentials.c.confirmed_at.is_(None))
    else:
        where.append(totp_credentials.c.confirmed_at.is_not(None))
    result = await conn.execute(update(totp_credentials).where(*where).values(**values))
    return result.rowcount == 1


async def remove(conn: AsyncConnection, user_id: str) -> bool:
    """Remove the user's authenticator app and recovery codes: whether there was an app."""
    result = await conn.execute(delete(totp_credentials).where(totp_credentials.c.user_id == user_id))
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    return result.rowcount > 0


async def replace_recovery_codes(conn: AsyncConnection, user_id: str, code_hashes: list[str], now: int) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    await conn.execute(
        insert(recovery_codes), [{"user_id": user_id, "code_hash": h, "created_at": now} for h in code_hashes]
    )


async def spend_recovery_code(conn: AsyncConnection, user_id: str, code_hash: str, now: int) -> bool:
    """Spend an unused recovery code: False when there is none such (unknown or used)."""
    result = await conn.execute(
        update(recovery_codes)
        .where(recovery_codes.c.user_id == user_id, recovery_codes.c.code_hash == code_hash, recovery_codes.c.used_at.is_(None))
        .values(used_at=now)
    )
    return result.rowcount == 1


async def unused_recovery_codes(conn: AsyncConnection, user_id: str) -> int:
    result = await conn.execute(
        select(func.count()).select_from(recovery_codes).where(
            recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None)
        )
    )
    return int(result.scalar_one())
