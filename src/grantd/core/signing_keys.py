"""Signing keys: created on first start, kept in the database, shared by every process."""

from __future__ import annotations

import json

from grantd.core.context import Context
from grantd.crypto import jws
from grantd.crypto.secrets import new_uuid
from grantd.store import signing_keys as store


async def ensure_active(ctx: Context) -> None:
    """Create the first signing key if no key is active yet."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.lock(tx)
        if any(row.activates_at <= now for row in await store.published(tx)):
            return
        await _insert_new(ctx, tx, now=now, activates_at=now)


async def _insert_new(ctx: Context, tx, *, now: int, activates_at: int) -> str:  # type: ignore[no-untyped-def]
    kid = new_uuid()
    private_key = jws.new_private_key()
    await store.insert_key(
        tx,
        kid=kid,
        algorithm=jws.ALGORITHM,
        public_jwk=json.dumps(jws.public_jwk(private_key.public_key(), kid)),
        private_key=ctx.sealer.seal(private_key, kid),
        now=now,
        activates_at=activates_at,
    )
    return kid


async def load(ctx: Context) -> jws.Signer:
    """Read the published keys; sign with the newest one already active."""
    now = ctx.now()
    async with ctx.db.read() as conn:
        rows = await store.published(conn)
    active = next((row for row in rows if row.activates_at <= now), None)
    if active is None:
        raise RuntimeError("no active signing key; run `grantd migrate` and start the server once")
    jwks = [json.loads(row.public_jwk) for row in rows]
    signer = jws.Signer(
        active=jws.SigningKey(active.kid, ctx.sealer.open(active.private_key, active.kid)),
        published={jwk["kid"]: jws.public_key_from_jwk(jwk) for jwk in jwks},
        jwks=jwks,
    )
    ctx.signer = signer
    return signer
