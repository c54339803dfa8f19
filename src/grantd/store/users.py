from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from grantd.store.db import fetch_one
from grantd.store.prepared import Prepared
from grantd.store.schema import user_sessions, users

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_user(conn: AsyncConnection, *, user_id: str, email: str, password_hash: str, now: int) -> bool:
    """False when the email is already taken."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(users).values(
                    id=user_id, email=email, password_hash=password_hash, created_at=now, updated_at=now
                )
            )
    except IntegrityError:
        return False
    return True


async def by_email(conn: AsyncConnection, email: str) -> Row | None:
    return (await conn.execute(select(users).where(users.c.email == email))).first()


async def set_profile(conn: AsyncConnection, user_id: str, values: Mapping[str, str | None], now: int) -> bool:
    """Write these profile columns (a None clears one) and ``updated_at``; False when the user name
    is another account's, in any case (``user_name_key``, its unique lower-case twin)."""
    columns: dict[str, str | int | None] = {**values, "updated_at": now}
    if "user_name" in values:
        user_name = values["user_name"]
        columns["user_name_key"] = user_name.lower() if user_name is not None else None
    try:
        async with conn.begin_nested():
            await conn.execute(update(users).where(users.c.id == user_id).values(columns))
    except IntegrityError:
        return False
    return True


_BY_ID = Prepared(select(users).where(users.c.id == bindparam("user_id")))


async def by_id(conn: AsyncConnection, user_id: str) -> Row | None:
    """Read by every consent page (the app owner's email) and every signed-in page."""
    return await fetch_one(conn, _BY_ID, user_id=user_id)


async def insert_session(
    conn: AsyncConnection, *, jti: str, user_id: str, issued_at: int, expires_at: int, amr: str | None = None
) -> None:
    await conn.execute(
        insert(user_sessions).values(jti=jti, user_id=user_id, issued_at=issued_at, expires_at=expires_at, amr=amr)
    )


_LIVE_SESSION = Prepared(
    select(user_sessions.c.user_id).where(
        user_sessions.c.jti == bindparam("jti"), user_sessions.c.revoked_at.is_(None), user_sessions.c.expires_at > bindparam("now")
    )
)


async def live_session(conn: AsyncConnection, jti: str, now: int) -> Row | None:
    """Read on every request a user token authenticates."""
    return await fetch_one(conn, _LIVE_SESSION, jti=jti, now=now)


async def revoke_session(conn: AsyncConnection, jti: str, now: int) -> None:
    await conn.execute(
        update(user_sessions).where(user_sessions.c.jti == jti, user_sessions.c.revoked_at.is_(None)).values(revoked_at=now)
    )


async def set_password_hash(conn: AsyncConnection, user_id: str, password_hash: str) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))


async def mark_email_verified(conn: AsyncConnection, user_id: str, email: str, now: int) -> bool:
    """Record that ``email`` was proven, if it is still the user's address; False otherwise (it
    changed since the link was sent). An address verified already keeps its first time."""
    result = await conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.email == email)
        .values(email_verified_at=func.coalesce(users.c.email_verified_at, now))
    )
    return result.rowcount == 1


async def set_verified_email(conn: AsyncConnection, user_id: str, old: str, new: str, now: int) -> bool | None:
    """Make ``new``, just proven, the user's address in place of ``old``: True; False when another
    account has it; None when the user's address is no longer ``old``."""
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.email == old)
                .values(email=new, email_verified_at=now, updated_at=now)
            )
    except IntegrityError:
        return False
    return True if result.rowcount == 1 else None


async def revoke_other_sessions(conn: AsyncConnection, user_id: str, keep_jti: str, now: int) -> int:
    """Revoke every live session of the user but ``keep_jti``; how many were revoked."""
    result = await conn.execute(
        update(user_sessions)
        .where(
            user_sessions.c.user_id == user_id,
            user_sessions.c.jti != keep_jti,
            user_sessions.c.revoked_at.is_(None),
            user_sessions.c.expires_at > now,
        )
        .values(revoked_at=now)
    )
    return result.rowcount
