from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from grantd.store.schema import access_tokens


async def insert_access_token(
    conn: AsyncConnection,
    *,
    jti: str,
    app_id: str,
    user_id: str | None,
    key_id: str | None,
    code_hash: str | None,
    scope: str,
    issued_at: int,
    expires_at: int,
) -> None:
    await conn.execute(
        insert(access_tokens).values(
            jti=jti,
            app_id=app_id,
            user_id=user_id,
            key_id=key_id,
            code_hash=code_hash,
            scope=scope,
            issued_at=issued_at,
            expires_at=expires_at,
        )
    )


async def revoke_issued_from_code(conn: AsyncConnection, code_hash: str, now: int) -> int:
    result = await conn.execute(
        update(access_tokens)
        .where(access_tokens.c.code_hash == code_hash, access_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount


async def by_jti(conn: AsyncConnection, jti: str) -> Row | None:
    return (await conn.execute(select(access_tokens).where(access_tokens.c.jti == jti))).first()
