from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Row

from grantd.store.db import Prepared, fetch_one, run
from grantd.store.schema import authorization_codes as codes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_INSERT = Prepared(
    insert(codes).values(
        {
            name: bindparam(name)
            for name in (
                "code_hash", "app_id", "user_id", "redirect_uri", "permissions", "state", "code_challenge", "created_at", "expires_at",
            )
        }
    )
)


async def insert_code(
    conn: AsyncConnection,
    *,
    code_hash: str,
    app_id: str,
    user_id: str,
    redirect_uri: str,
    permissions: str,
    state: str,
    code_challenge: str | None,
    now: int,
    expires_at: int,
) -> None:
    await run(
        conn,
        _INSERT,
        code_hash=code_hash,
        app_id=app_id,
        user_id=user_id,
        redirect_uri=redirect_uri,
        permissions=permissions,
        state=state,
        code_challenge=code_challenge,
        created_at=now,
        expires_at=expires_at,
    )


_REDEEM = Prepared(
    update(codes)
    .where(
        codes.c.code_hash == bindparam("code_hash"),
        codes.c.app_id == bindparam("app_id"),
        codes.c.redeemed_at.is_(None),
        codes.c.expires_at > bindparam("now"),
    )
    .values(redeemed_at=bindparam("now"))
    .returning(codes.c.user_id, codes.c.permissions, codes.c.redirect_uri, codes.c.code_challenge)
)
_FIND = Prepared(
    select(codes.c.app_id, codes.c.user_id, codes.c.redeemed_at, codes.c.expires_at).where(
        codes.c.code_hash == bindparam("code_hash")
    )
)


async def redeem(conn: AsyncConnection, code_hash: str, app_id: str, now: int) -> Row | None:
    """Mark the code redeemed if it is the app's, unexpired and unused: atomic, so at most one caller wins."""
    return await fetch_one(conn, _REDEEM, code_hash=code_hash, app_id=app_id, now=now)


async def find(conn: AsyncConnection, code_hash: str) -> Row | None:
    return await fetch_one(conn, _FIND, code_hash=code_hash)


async def void_unredeemed(conn: AsyncConnection, user_id: str, app_id: str, now: int) -> None:
    """Spend every outstanding code of a user for an app, so none of them can be redeemed."""
    await conn.execute(
        update(codes)
        .where(codes.c.user_id == user_id, codes.c.app_id == app_id, codes.c.redeemed_at.is_(None))
        .values(redeemed_at=now)
    )
