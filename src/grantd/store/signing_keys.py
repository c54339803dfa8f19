from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Collection, Sequence

from sqlalchemy import insert, or_, select, text, update
from sqlalchemy.engine import Row

from grantd.store.schema import signing_keys

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

_PG_SIGNING_KEY_LOCK = 0x6B657973


async def lock(conn: AsyncConnection) -> None:
    """Serialise key creation and rotation across processes (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SIGNING_KEY_LOCK})


async def published(conn: AsyncConnection, now: int, keep_after_retirement: int) -> Sequence[Row]:
    """Keys still published: not retired, or retired so recently that tokens they signed may be alive.

    Newest activation first.
    """
    query = (
        select(signing_keys)
        .where(
            or_(
                signing_keys.c.retired_at.is_(None),
                signing_keys.c.retired_at + keep_after_retirement > now,
            )
        )
        .order_by(signing_keys.c.activates_at.desc(), signing_keys.c.created_at.desc(), signing_keys.c.kid)
    )
    return (await conn.execute(query)).all()


async def insert_key(
    conn: AsyncConnection, *, kid: str, algorithm: str, public_jwk: str, private_key: bytes, now: int, activates_at: int
) -> None:
    await conn.execute(
        insert(signing_keys).values(
            kid=kid,
            algorithm=algorithm,
            public_jwk=public_jwk,
            private_key=private_key,
            created_at=now,
            activates_at=activates_at,
        )
    )


async def retire_all_but(conn: AsyncConnection, kids: Collection[str], at: int) -> None:
    """Every unretired key but ``kids`` stops signing at ``at``."""
    await conn.execute(
        update(signing_keys)
        .where(signing_keys.c.kid.not_in(list(kids)), signing_keys.c.retired_at.is_(None))
        .values(retired_at=at)
    )
