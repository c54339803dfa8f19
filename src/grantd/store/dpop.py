"""The DPoP proofs already used (RFC 9449 §11.1), when no Redis keeps them: one row per proof, by
a keyed hash of its key and ``jti``, until the proof could no longer pass the ``iat`` check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grantd.store.db import upsert
from grantd.store.schema import dpop_proof_jtis

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def record_proof(conn: AsyncConnection, proof_hash: str, expires_at: int, now: int) -> bool:
    """Record a proof until ``expires_at``: False if it is recorded already and unexpired (a replay).
    An expired row of the same hash is taken over (one atomic upsert: of concurrent callers, one wins)."""
    stmt = upsert(conn, dpop_proof_jtis).values(proof_hash=proof_hash, expires_at=expires_at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[dpop_proof_jtis.c.proof_hash],
        set_={"expires_at": stmt.excluded.expires_at},
        where=dpop_proof_jtis.c.expires_at <= now,
    ).returning(dpop_proof_jtis.c.proof_hash)
    return (await conn.execute(stmt)).first() is not None
