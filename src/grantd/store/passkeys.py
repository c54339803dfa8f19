"""The statements of passkeys (WebAuthn): ``core.passkeys`` holds the rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from grantd.store.schema import passkey_challenges as challenges, passkeys

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_passkey(
    conn: AsyncConnection, *, credential_id: str, user_id: str, public_key: str, sign_count: int,
    transports: str, name: str, now: int,
) -> bool:
    """False when the credential id is registered already (to this or another account)."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(passkeys).values(
                    credential_id=credential_id, user_id=user_id, public_key=public_key, sign_count=sign_count,
                    transports=transports, name=name, created_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


async def of_user(conn: AsyncConnection, user_id: str) -> list[Row]:
    query = select(passkeys).where(passkeys.c.user_id == user_id).order_by(passkeys.c.created_at, passkeys.c.credential_id)
    return list((await conn.execute(query)).all())


async def count_of_user(conn: AsyncConnection, user_id: str) -> int:
    query = select(func.count()).select_from(passkeys).where(passkeys.c.user_id == user_id)
    return int((await conn.execute(query)).scalar_one())


async def by_credential_id(conn: AsyncConnection, credential_id: str) -> Row | None:
    return (await conn.execute(select(passkeys).where(passkeys.c.credential_id == credential_id))).first()


async def record_use(conn: AsyncConnection, credential_id: str, *, seen_count: int, new_count: int, now: int) -> bool:
    """The new signature counter and the time of use, if the counter is still the one the check
    was made against (two sign-ins at once with one credential: one of them is refused)."""
    result = await conn.execute(
        update(passkeys)
        .where(passkeys.c.credential_id == credential_id, passkeys.c.sign_count == seen_count)
        .values(sign_count=new_count, last_used_at=now)
    )
    return result.rowcount == 1


async def rename(conn: AsyncConnection, user_id: str, credential_id: str, name: str) -> bool:
    result = await conn.execute(
        update(passkeys).where(passkeys.c.credential_id == credential_id, passkeys.c.user_id == user_id).values(name=name)
    )
    return result.rowcount == 1


async def remove(conn: AsyncConnection, user_id: str, credential_id: str) -> bool:
    result = await conn.execute(
        delete(passkeys).where(passkeys.c.credential_id == credential_id, passkeys.c.user_id == user_id)
    )
    return result.rowcount == 1


async def insert_challenge(
    conn: AsyncConnection, *, challenge_hash: str, purpose: str, binding: str, expires_at: int, now: int
) -> None:
    """A new challenge; the expired ones go at the same time."""
    await conn.execute(delete(challenges).where(challenges.c.expires_at <= now))
    await conn.execute(
        insert(challenges).values(challenge_hash=challenge_hash, purpose=purpose, binding=binding, expires_at=expires_at)
    )


async def spend_challenge(conn: AsyncConnection, challenge_hash: str, purpose: str, binding: str, now: int) -> bool:
    """Whether the challenge was live, for this purpose and binding; it is gone after, either way
    (one DELETE decides: of two answers with one challenge, at most one is taken)."""
    row = (await conn.execute(select(challenges).where(challenges.c.challenge_hash == challenge_hash))).first()
    if row is None:
        return False
    result = await conn.execute(delete(challenges).where(challenges.c.challenge_hash == challenge_hash))
    return result.rowcount == 1 and row.purpose == purpose and row.binding == binding and row.expires_at > now
