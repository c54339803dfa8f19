"""RFC 7591 §3 initial access tokens: only their keyed hashes are stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Row

from grantd.store.schema import initial_access_tokens as tokens

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_token(
    conn: AsyncConnection, *, token_id: str, token_hash: str, owner_id: str | None, now: int, expires_at: int | None
) -> None:
    await conn.execute(
        insert(tokens).values(
            id=token_id, token_hash=token_hash, owner_id=owner_id, created_at=now, expires_at=expires_at
        )
    )


async def live_by_hash(conn: AsyncConnection, token_hash: str, now: int) -> Row | None:
    """The unrevoked, unexpired token of ``token_hash``: its id and owner."""
    query = select(tokens.c.id, tokens.c.owner_id).where(
        tokens.c.token_hash == token_hash,
        tokens.c.revoked_at.is_(None),
        or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
    )
    return (await conn.execute(query)).first()


async def listed(conn: AsyncConnection, owner_id: str | None) -> Sequence[Row]:
    """A developer's tokens (``owner_id``), or the operator's (None), oldest first."""
    owner = tokens.c.owner_id.is_(None) if owner_id is None else tokens.c.owner_id == owner_id
    query = select(tokens.c.id, tokens.c.created_at, tokens.c.expires_at, tokens.c.revoked_at).where(owner)
    return (await conn.execute(query.order_by(tokens.c.created_at, tokens.c.id))).all()


async def revoke(conn: AsyncConnection, owner_id: str | None, token_id: str, now: int) -> Row | None:
    """Revoke a token of ``owner_id`` (None: the operator, any token); None when there is no such token."""
    query = update(tokens).where(tokens.c.id == token_id)
    if owner_id is not None:
        query = query.where(tokens.c.owner_id == owner_id)
    await conn.execute(query.values(revoked_at=func.coalesce(tokens.c.revoked_at, now)))
    found = select(tokens.c.id, tokens.c.created_at, tokens.c.expires_at, tokens.c.revoked_at).where(tokens.c.id == token_id)
    if owner_id is not None:
        found = found.where(tokens.c.owner_id == owner_id)
    return (await conn.execute(found)).first()
