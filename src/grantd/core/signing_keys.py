"""Signing keys: created on first start, kept in the database, shared by every process, rotated by the operator.

There is one active key per algorithm (``jws.ALGORITHMS``): ES256 signs access tokens and user
tokens, RS256 (or ES256, per app) ID tokens. A deployment that had only ES256 keys gets its RS256
key on its next start.

Rotation replaces the keys of every algorithm at once. It publishes the next keys at once but
lets them sign only after a delay, so every process and every resource server caching the JWKS
knows them before the first token they sign arrives. Each previous key retires when its
successor activates, and stays published until every token it can have signed has expired.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grantd.core import audit
from grantd.core.context import Context
from grantd.crypto import jws
from grantd.crypto.secrets import new_uuid
from grantd.store import signing_keys as store
from grantd.store.availability import DatabaseUnavailable

# Default of GRANTD_SIGNING_KEY_RELOAD_INTERVAL: how often each process re-reads the keys; sooner when a pending key activates.
RELOAD_INTERVAL = 30


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    algorithm: str
    created_at: int
    activates_at: int
    retired_at: int | None


def active_by_algorithm(keys: Iterable[Any], now: int) -> dict[str, Any]:
    """The key that signs now for each algorithm: the newest activated and not yet retired.

    ``keys``: rows of ``store.published`` or ``KeyInfo`` objects, newest activation first, as both come."""
    active: dict[str, Any] = {}
    for key in keys:
        if key.algorithm in jws.ALGORITHMS and key.algorithm not in active and key.activates_at <= now and (
            key.retired_at is None or key.retired_at > now
        ):
            active[key.algorithm] = key
    return active


def _keep_after_retirement(ctx: Context) -> int:
    settings = ctx.settings
    return max(settings.access_token_ttl, settings.user_token_ttl) + 60


async def ensure_active(ctx: Context) -> None:
    """Create a signing key for every algorithm that has no active one yet."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.lock(tx)
        active = active_by_algorithm(await store.published(tx, now, _keep_after_retirement(ctx)), now)
        for algorithm in jws.ALGORITHMS:
            if algorithm not in active:
                await _insert(ctx, tx, jws.new_private_key(algorithm), now=now, activates_at=now)


async def rotate(ctx: Context, delay: int | None = None) -> list[KeyInfo]:
    """Publish a new key of every algorithm now; they start signing after ``delay`` seconds,
    when the current keys retire. One ``signing_key_rotated`` audit event per new key."""
    now = ctx.now()
    activates_at = now + (ctx.settings.signing_key_activation_delay if delay is None else delay)
    new_keys = [jws.new_private_key(algorithm) for algorithm in jws.ALGORITHMS]  # RSA's takes ~0.1 s: not under the lock
    async with ctx.db.write() as tx:
        await store.lock(tx)
        kids = [await _insert(ctx, tx, key, now=now, activates_at=activates_at) for key in new_keys]
        await store.retire_all_but(tx, kids, activates_at)
        for kid, key in zip(kids, new_keys, strict=True):
            await audit.record(
                ctx, tx, "signing_key_rotated", actor=audit.OPERATOR, now=now,
                kid=kid, algorithm=jws.algorithm_of(key), activates_at=activates_at,
            )
    return [KeyInfo(kid, jws.algorithm_of(key), now, activates_at, None) for kid, key in zip(kids, new_keys, strict=True)]


async def list_keys(ctx: Context) -> list[KeyInfo]:
    async with ctx.db.read() as conn:
        rows = await store.published(conn, ctx.now(), _keep_after_retirement(ctx))
    return [KeyInfo(row.kid, row.algorithm, row.created_at, row.activates_at, row.retired_at) for row in rows]


async def _insert(ctx: Context, tx, private_key: jws.PrivateKey, *, now: int, activates_at: int) -> str:  # type: ignore[no-untyped-def]
    kid = new_uuid()
    await store.insert_key(
        tx,
        kid=kid,
        algorithm=jws.algorithm_of(private_key),
        public_jwk=json.dumps(jws.public_jwk(private_key.public_key(), kid)),
        private_key=ctx.sealer.seal(private_key, kid),
        now=now,
        activates_at=activates_at,
    )
    return kid


async def load(ctx: Context) -> jws.Signer:
    """Read the published keys; sign with the newest one already active of each algorithm. Returns the new signer."""
    now = ctx.now()
    async with ctx.db.read() as conn:
        rows = [row for row in await store.published(conn, now, _keep_after_retirement(ctx)) if row.algorithm in jws.ALGORITHMS]
    active = active_by_algorithm(rows, now)
    missing = [algorithm for algorithm in jws.ALGORITHMS if algorithm not in active]
    if missing:
        raise RuntimeError(f"no active {' or '.join(missing)} signing key; run `grantd migrate` or `grantd serve` once")
    pending = [row.activates_at for row in rows if row.activates_at > now]
    jwks = [json.loads(row.public_jwk) for row in rows]
    current = ctx.signer
    keys = []
    for algorithm, row in active.items():
        known = current.active.get(algorithm) if current is not None else None
        if known is not None and known.kid == row.kid:
            keys.append(known)
            continue
        private_key = ctx.sealer.open(row.private_key, row.kid)
        if jws.algorithm_of(private_key) != algorithm:
            raise RuntimeError(f"signing key {row.kid} is stored as {algorithm} but is not one")
        keys.append(jws.SigningKey(row.kid, private_key))
    signer = jws.Signer(keys, jwks, reload_at=min([now + ctx.settings.signing_key_reload_interval, *pending]))
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
        except DatabaseUnavailable:
            await asyncio.sleep(5)  # logged once by the store; keep serving with the keys we have
        except Exception:  # noqa: BLE001 - keep serving with the keys we have; try again soon
            logging.getLogger("grantd").exception("reloading signing keys failed")
            await asyncio.sleep(5)
