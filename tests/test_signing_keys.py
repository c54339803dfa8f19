"""Signing keys: created once, shared through the database, rotated with a delay, retired after their tokens."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jwt
import pytest

from cryptography.exceptions import InvalidTag

from grantd.config import Settings
from grantd.core import signing_keys
from grantd.core.context import Context
from grantd.crypto.jws import KeySealer
from support.neucron import Flow

pytestmark = pytest.mark.db


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


async def jwks_kids(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return [key["kid"] for key in response.json()["keys"]]


def verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    keys = {key["kid"]: jwt.PyJWK(key) for key in jwks["keys"]}
    return jwt.decode(token, keys[kid_of(token)], algorithms=["ES256"], audience="http://testserver")


async def test_rotation_publishes_first_signs_after_the_delay_and_keeps_the_old_key(flow: Flow, app: Any) -> None:
    ctx: Context = app.state.ctx
    before = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    old_kid = kid_of(before)

    new = await signing_keys.rotate(ctx, delay=2)
    await signing_keys.load(ctx)
    assert set(await jwks_kids(flow.client)) >= {old_kid, new.kid}
    during = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    assert kid_of(during) == old_kid, "the new key must not sign before its activation"

    await asyncio.sleep(2.1)
    await signing_keys.load(ctx)
    after = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    assert kid_of(after) == new.kid
    jwks = (await flow.client.get("/.well-known/jwks.json")).json()
    assert {kid_of(before), kid_of(after)} <= {key["kid"] for key in jwks["keys"]}
    for token in (before, during, after):
        assert verify(token, jwks)["jti"]


async def test_a_retired_key_is_unpublished_once_every_token_it_signed_has_expired(settings: Settings) -> None:
    ctx = Context.from_settings(settings)
    try:
        await signing_keys.load(ctx)
        old_kid = ctx.signing.active.kid
        rotated = await signing_keys.rotate(ctx, delay=0)
        published = [key.kid for key in await signing_keys.list_keys(ctx)]
        assert old_kid in published and rotated.kid in published

        longest = max(settings.access_token_ttl, settings.user_token_ttl)
        now = ctx.now()
        ctx.now = lambda: now + longest - 5  # type: ignore[method-assign]
        assert old_kid in [key.kid for key in await signing_keys.list_keys(ctx)]
        ctx.now = lambda: now + longest + 120  # type: ignore[method-assign]
        assert old_kid not in [key.kid for key in await signing_keys.list_keys(ctx)]
        assert rotated.kid in [key.kid for key in await signing_keys.list_keys(ctx)]
    finally:
        await ctx.close()


async def test_private_keys_are_sealed_at_rest(app: Any) -> None:
    from sqlalchemy import select

    from grantd.store.schema import signing_keys as table

    ctx: Context = app.state.ctx
    async with ctx.db.read() as conn:
        rows = (await conn.execute(select(table.c.kid, table.c.private_key, table.c.public_jwk))).all()
    assert rows
    for row in rows:
        assert b"PRIVATE KEY" not in row.private_key
        assert "d" not in json.loads(row.public_jwk), "the published JWK must not carry the private scalar"
        # Sealed under the master secret: a different secret cannot open it.
        with pytest.raises(InvalidTag):
            KeySealer(b"another master secret of 32+ bytes").open(row.private_key, row.kid)
        assert ctx.sealer.open(row.private_key, row.kid) is not None


def test_a_verified_token_is_refused_once_it_expires_and_a_new_key_set_trusts_nothing_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The signer remembers the tokens it verified (grantd.crypto.jws): that memory must not outlive
    a token's exp, nor the key set it was verified under."""
    from grantd.crypto import jws

    now = int(jws.time.time())
    old, new = jws.new_private_key(), jws.new_private_key()

    def signer(key: Any, kid: str) -> jws.Signer:
        jwk = jws.public_jwk(key.public_key(), kid)
        return jws.Signer(jws.SigningKey(kid, key), {kid: key.public_key()}, [jwk], reload_at=now + 30)

    before = signer(old, "old")
    claims = {"iss": "https://issuer.test", "sub": "s", "jti": "j", "iat": now, "exp": now + 60}
    token = before.sign(claims, "at+jwt")
    assert before.verify(token, typ="at+jwt", issuer="https://issuer.test")["jti"] == "j"
    assert before.verify(token, typ="at+jwt", issuer="https://issuer.test")["jti"] == "j"  # from memory

    later = now + 60 + jws.LEEWAY  # exp, plus the allowed skew, has passed
    monkeypatch.setattr(jws.time, "time", lambda: later)
    with pytest.raises(jws.InvalidSignature):
        before.verify(token, typ="at+jwt", issuer="https://issuer.test")

    monkeypatch.undo()
    after = signer(new, "new")  # a reload that no longer publishes the old key
    with pytest.raises(jws.InvalidSignature):
        after.verify(token, typ="at+jwt", issuer="https://issuer.test")
