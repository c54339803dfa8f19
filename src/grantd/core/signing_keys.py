"""Signing keys: created on first start, kept in the database, shared by every process, rotated by the operator.

Rotation publishes the next key at once but lets it sign only after a delay, so every
process and every resource server caching the JWKS knows it before the first token it
signs arrives. The previous key retires when its successor activates, and stays published
until every token it can have signed has expired.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from grantd.core import audit
from grantd.core.context import Context
from grantd.crypto import jws
from grantd.crypto.secrets import new_uuid
from grantd.store import signing_keys as store

# Default of GRANTD_SIGNING_KEY_RELOAD_INTERVAL: how often each process re-reads the keys; sooner when a pending key activates.
RELOAD_INTERVAL = 30


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    created_at: int
    activates_at: int
    retired_at: int | None


def _keep_after_retirement(ctx: Context) -> int:
    settings = ctx.settings
    return max(settings.access_token_ttl, settings.user_token_ttl) + 60


async def ensure_active(ctx: Context) -> None:
    """Create the first signing key if no key is active yet."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.lock(tx)
        rows = await store.published(tx, now, _keep_after_retirement(ctx))
        if any(row.activates_at <= now and (row.retired_at is None or row.retired_at > now) for row in rows):
            return
        await _insert_new(ctx, tx, now=now, activates_at=now)


async def rotate(ctx: Context, delay: int | None = None) -> KeyInfo:
    """Publish a new key now; it starts signing after ``delay`` seconds, when the current key retires."""
    now = ctx.now()
    activates_at = now + (ctx.settings.signing_key_activation_delay if delay is None else delay)
    async with ctx.db.write() as tx:
        await store.lock(tx)
        kid = await _insert_new(ctx, tx, now=now, activates_at=activates_at)
        await store.retire_all_but(tx, kid, activates_at)
        await audit.record(ctx, tx, "signing_key_rotated", actor=audit.OPERATOR, now=now, kid=kid, activates_at=activates_at)
    return KeyInfo(kid, now, activates_at, None)


async def list_keys(ctx: Context) -> list[KeyInfo]:
    async with ctx.db.read() as conn:
        rows = await store.published(conn, ctx.now(), _keep_after_retirement(ctx))
    return [KeyInfo(row.kid, row.created_at, row.activates_at, row.retired_at) for row in rows]


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
    """Read the published keys; sign with the newest one already active. Returns the new signer."""
    now = ctx.now()
    async with ctx.db.read() as conn:
        rows = await store.published(conn, now, _keep_after_retirement(ctx))
    active = next(
        (row for row in rows if row.activates_at <= now and (row.retired_at is None or row.retired_at > now)), None
    )
    if active is None:
        raise RuntimeError("no active signing key; run `grantd migrate` or `grantd serve` once")
    pending = [row.activates_at for row in rows if row.activates_at > now]
    jwks = [json.loads(row.public_jwk) for row in rows]
    current = ctx.signer
    private_key = (
        current.active.private_key
        if current is not None and current.active.kid == active.kid
        else ctx.sealer.open(active.private_key, active.kid)
    )
    signer = jws.Signer(
        active=jws.SigningKey(active.kid, private_key),
        published={jwk["kid"]: jws.public_key_from_jwk(jwk) for jwk in jwks},
        jwks=jwks,
        reload_at=min([now + ctx.settings.signing_key_reload_interval, *pending]),
    )
    ctx.signer = signer
    return signer


async def keep_fresh(ctx: Context) -> None:
    """Re-read the keys whenever the signer says so: a rotation by any process reaches this one."""
    while True:
        await asyncio.sleep(max(1, ctx.signing.reload_at - ctx.now()))
        reload = asyncio.ensure_future(load(ctx))
        try:
            await asyncio.shield(reload)
        except asyncio.CancelledError:
            # Stopped mid-read: finish it first, so that no connection is left in the middle of a query.
            await asyncio.gather(reload, return_exceptions=True)
            raise
        except Exception:  # noqa: BLE001 - keep serving with the keys we have; try again soon
            logging.getLogger("grantd").exception("reloading signing keys failed")
            await asyncio.sleep(5)
