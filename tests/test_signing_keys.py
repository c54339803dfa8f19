"""Signing keys: one of each algorithm (ES256, RS256), created once, shared through the database,
rotated together with a delay, retired after their tokens."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from grantd.config import Settings
from grantd.core import accounts, signing_keys
from grantd.core.context import Context
from grantd.crypto import jws
from grantd.crypto.jws import KeySealer
from grantd.core.errors import InvalidToken
from grantd.sdk import InvalidTokenError, TokenVerifier
from support.databases import migrate
from support.neucron import Flow
from support.servers import ServerProcess

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


def id_token_claims(issuer: str, audience: str = "app-1", *, lifetime: int = 300, **extra: Any) -> dict[str, Any]:
    """The claims of an ID token (OpenID Connect Core §2) as the OpenID work will sign them."""
    now = int(time.time())
    return {"iss": issuer, "sub": "user-1", "aud": audience, "iat": now, "exp": now + lifetime, "nonce": "n-1", **extra}


def active_kids(signer: jws.Signer) -> dict[str, str]:
    return {algorithm: key.kid for algorithm, key in signer.active.items()}


def settings_on(settings: Settings, database_url: str) -> Settings:
    """The session's settings on another database; what they cached (the database URL) forgotten."""
    copied = settings.model_copy(update={"database_url": database_url})
    copied.__dict__.pop("resolved_database_url", None)
    return copied


@pytest.fixture
async def fresh_ctx(settings: Settings, tmp_path: Path) -> Any:
    """A Context on a new, migrated SQLite database with no signing key yet: a first start."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await migrate(url)
    ctx = Context.from_settings(settings_on(settings, url))
    try:
        yield ctx
    finally:
        await ctx.close()


async def test_the_first_start_creates_and_publishes_an_active_key_of_each_algorithm(fresh_ctx: Context) -> None:
    assert await signing_keys.list_keys(fresh_ctx) == []
    await signing_keys.ensure_active(fresh_ctx)
    await signing_keys.ensure_active(fresh_ctx)  # a second start (or a second process) adds nothing
    keys = await signing_keys.list_keys(fresh_ctx)
    assert sorted(key.algorithm for key in keys) == ["ES256", "RS256"]
    assert all(key.activates_at <= fresh_ctx.now() and key.retired_at is None for key in keys)

    signer = await signing_keys.load(fresh_ctx)
    assert active_kids(signer) == {key.algorithm: key.kid for key in keys}
    assert isinstance(signer.active["ES256"].private_key, ec.EllipticCurvePrivateKey)
    rsa_key = signer.active["RS256"].private_key
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert rsa_key.key_size == 2048 and rsa_key.public_key().public_numbers().e == 65537

    published = {jwk["kid"]: jwk for jwk in json.loads(signer.jwks_document)["keys"]}
    assert set(published) == {key.kid for key in keys}
    for key in keys:
        jwk = published[key.kid]
        assert jwk["alg"] == key.algorithm and jwk["use"] == "sig"
        assert jwt.PyJWK(jwk).algorithm_name == key.algorithm
    rsa_jwk = published[signer.active["RS256"].kid]
    assert rsa_jwk["kty"] == "RSA" and rsa_jwk["e"] == "AQAB" and not {"d", "p", "q", "dp", "dq", "qi"} & set(rsa_jwk)
    assert len(jwt.utils.base64url_decode(rsa_jwk["n"])) == 256  # the modulus, without a leading zero


async def test_an_existing_deployment_gets_its_rs256_key_on_the_next_start(
    fresh_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as before:
        before.setattr(jws, "ALGORITHMS", ("ES256",))  # the release before RS256
        await signing_keys.ensure_active(fresh_ctx)
    [es256] = await signing_keys.list_keys(fresh_ctx)
    with pytest.raises(RuntimeError, match="RS256"):
        await signing_keys.load(fresh_ctx)

    await signing_keys.ensure_active(fresh_ctx)  # the next start
    keys = {key.algorithm: key for key in await signing_keys.list_keys(fresh_ctx)}
    assert keys["ES256"] == es256, "the ES256 key is kept as it was"
    signer = await signing_keys.load(fresh_ctx)
    assert active_kids(signer) == {"ES256": es256.kid, "RS256": keys["RS256"].kid}


async def test_rotation_publishes_first_signs_after_the_delay_and_keeps_the_old_key(flow: Flow, app: Any) -> None:
    ctx: Context = app.state.ctx
    before = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    old_kid = kid_of(before)
    old = active_kids(ctx.signing)
    assert old["ES256"] == old_kid
    id_before = ctx.signing.sign(id_token_claims(ctx.settings.issuer), "JWT", alg="RS256")

    rotated = await signing_keys.rotate(ctx, delay=2)
    new = {key.algorithm: key for key in rotated}
    assert sorted(new) == ["ES256", "RS256"] and len({key.activates_at for key in rotated}) == 1
    await signing_keys.load(ctx)
    assert set(await jwks_kids(flow.client)) >= set(old.values()) | {key.kid for key in rotated}
    during = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    assert kid_of(during) == old_kid, "the new key must not sign before its activation"
    assert active_kids(ctx.signing) == old, "neither new key signs before its activation"

    await asyncio.sleep(2.1)
    await signing_keys.load(ctx)
    after = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    assert kid_of(after) == new["ES256"].kid
    assert active_kids(ctx.signing) == {algorithm: key.kid for algorithm, key in new.items()}
    id_after = ctx.signing.sign(id_token_claims(ctx.settings.issuer), "JWT", alg="RS256")
    assert kid_of(id_after) == new["RS256"].kid

    # Each predecessor retired when its successor activated, and is still published for its tokens.
    listed = {key.kid: key for key in await signing_keys.list_keys(ctx)}
    for algorithm, kid in old.items():
        assert listed[kid].retired_at == new[algorithm].activates_at
    jwks = (await flow.client.get("/.well-known/jwks.json")).json()
    assert {kid_of(before), kid_of(after), kid_of(id_before), kid_of(id_after)} <= {key["kid"] for key in jwks["keys"]}
    for token in (before, during, after):
        assert verify(token, jwks)["jti"]
    for token in (id_before, id_after):
        assert ctx.signing.verify_id_token(token, issuer=ctx.settings.issuer, audience="app-1")["sub"] == "user-1"


async def test_a_retired_key_is_unpublished_once_every_token_it_signed_has_expired(settings: Settings) -> None:
    ctx = Context.from_settings(settings)
    try:
        await signing_keys.load(ctx)
        old_kids = set(active_kids(ctx.signing).values())
        rotated = {key.kid for key in await signing_keys.rotate(ctx, delay=0)}
        published = {key.kid for key in await signing_keys.list_keys(ctx)}
        assert old_kids | rotated <= published

        longest = max(settings.access_token_ttl, settings.user_token_ttl)
        now = ctx.now()
        ctx.now = lambda: now + longest - 5  # type: ignore[method-assign]
        assert old_kids <= {key.kid for key in await signing_keys.list_keys(ctx)}
        ctx.now = lambda: now + longest + 120  # type: ignore[method-assign]
        listed = {key.kid for key in await signing_keys.list_keys(ctx)}
        assert not old_kids & listed
        assert rotated <= listed
    finally:
        await ctx.close()


async def test_private_keys_are_sealed_at_rest(app: Any) -> None:
    from sqlalchemy import select

    from grantd.store.schema import signing_keys as table

    ctx: Context = app.state.ctx
    async with ctx.db.read() as conn:
        rows = (await conn.execute(select(table.c.kid, table.c.algorithm, table.c.private_key, table.c.public_jwk))).all()
    assert {row.algorithm for row in rows} == {"ES256", "RS256"}
    for row in rows:
        assert b"PRIVATE KEY" not in row.private_key and b"-----" not in row.private_key
        public = json.loads(row.public_jwk)
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(public), "the published JWK must not carry a private part"
        assert public["alg"] == row.algorithm
        # Sealed under the master secret: a different secret cannot open it.
        with pytest.raises(InvalidTag):
            KeySealer(b"another master secret of 32+ bytes").open(row.private_key, row.kid)
        key = ctx.sealer.open(row.private_key, row.kid)
        assert jws.algorithm_of(key) == row.algorithm
        # Neither the PKCS#8 DER nor any private number appears in the stored bytes.
        from cryptography.hazmat.primitives import serialization

        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        assert der[:16] not in row.private_key
        numbers = key.private_numbers()
        secrets = (
            [numbers.private_value.to_bytes(32, "big")]
            if isinstance(numbers, ec.EllipticCurvePrivateNumbers)
            else [n.to_bytes((n.bit_length() + 7) // 8, "big") for n in (numbers.d, numbers.p, numbers.q)]
        )
        for secret in secrets:
            assert secret[:16] not in row.private_key
        # Bound to its kid: another row's kid does not open it.
        with pytest.raises(InvalidTag):
            ctx.sealer.open(row.private_key, "another-kid")


async def test_a_restarted_process_signs_with_the_same_keys(settings: Settings, app: Any) -> None:
    running: Context = app.state.ctx
    await signing_keys.load(running)
    restarted = Context.from_settings(settings)
    try:
        await signing_keys.ensure_active(restarted)  # what `grantd serve` does on start
        signer = await signing_keys.load(restarted)
        assert active_kids(signer) == active_kids(running.signing)
        issuer = settings.issuer
        for alg in jws.ALGORITHMS:
            token = signer.sign(id_token_claims(issuer), "JWT", alg=alg)
            assert jwt.get_unverified_header(token) == {"alg": alg, "kid": running.signing.active[alg].kid, "typ": "JWT"}
            assert running.signing.verify_id_token(token, issuer=issuer)["nonce"] == "n-1"
            back = running.signing.sign(id_token_claims(issuer), "JWT", alg=alg)
            assert signer.verify_id_token(back, issuer=issuer)["sub"] == "user-1"
    finally:
        await restarted.close()


async def test_an_rs256_id_token_verifies_with_pyjwt_and_authlib_against_the_jwks_served_over_http(
    settings: Settings, app: Any, server_factory: Callable[..., ServerProcess]
) -> None:
    """A real `grantd serve` on the same database publishes the keys; the ID token signed here
    verifies with PyJWT and with Authlib's jose against its JWKS. An ES256 access token still
    verifies with the SDK against that JWKS, which now holds RSA keys too."""
    ctx: Context = app.state.ctx
    await signing_keys.load(ctx)
    server = server_factory(settings.database_url)
    issuer = settings.issuer
    claims = id_token_claims(issuer, "app-42")
    id_token = ctx.signing.sign(claims, "JWT", alg="RS256")
    header = jwt.get_unverified_header(id_token)
    assert header == {"alg": "RS256", "kid": ctx.signing.active["RS256"].kid, "typ": "JWT"}

    jwks = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).raise_for_status().json()
    assert {key["alg"] for key in jwks["keys"]} == {"ES256", "RS256"}
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == header["kid"])
    assert key.algorithm_name == "RS256"
    assert jwt.decode(id_token, key, algorithms=["RS256"], audience="app-42", issuer=issuer) == claims

    with warnings.catch_warnings(record=True):  # authlib.jose points to joserfc, yet ships in every 1.x
        from authlib.jose import JsonWebKey, JsonWebToken

    decoded = JsonWebToken(["RS256"]).decode(
        id_token, JsonWebKey.import_key_set(jwks), claims_options={"iss": {"essential": True, "value": issuer}}
    )
    decoded.validate()
    assert dict(decoded) == claims and decoded.header["kid"] == header["kid"]

    # The SDK: ES256 access tokens verify; a token of the RSA key is not an access token.
    now = int(time.time())
    access_claims = {
        "iss": issuer, "sub": "user-1", "aud": settings.audience, "client_id": "app-42", "scope": "read_profile",
        "iat": now, "exp": now + 60, "jti": str(uuid.uuid4()), "user_id": "user-1", "permissions": ["read_profile"],
    }
    verifier = TokenVerifier(issuer, settings.audience, jwks_uri=f"{server.base_url}/.well-known/jwks.json")
    assert verifier.verify(ctx.signing.sign(access_claims, "at+jwt")).jti == access_claims["jti"]
    with pytest.raises(InvalidTokenError) as refused:
        verifier.verify(ctx.signing.sign(access_claims, "at+jwt", alg="RS256"))
    assert refused.value.reason == "unsupported_algorithm"


async def test_id_tokens_of_either_algorithm_verify_and_nothing_else_passes_for_one(app: Any, flow: Flow) -> None:
    ctx: Context = app.state.ctx
    await signing_keys.load(ctx)
    signer, issuer = ctx.signing, ctx.settings.issuer
    for alg in ("RS256", "ES256"):
        token = signer.sign(id_token_claims(issuer), "JWT", alg=alg)
        assert signer.verify_id_token(token, issuer=issuer, audience="app-1")["aud"] == "app-1"
        assert signer.verify_id_token(token, issuer=issuer)["sub"] == "user-1"  # id_token_hint: any app's
        with pytest.raises(jws.InvalidSignature):
            signer.verify_id_token(token, issuer=issuer, audience="another-app")
        with pytest.raises(jws.InvalidSignature):
            signer.verify_id_token(token, issuer="https://elsewhere.example")

        expired = signer.sign(id_token_claims(issuer, lifetime=-3600), "JWT", alg=alg)
        with pytest.raises(jws.InvalidSignature):
            signer.verify_id_token(expired, issuer=issuer)
        assert signer.verify_id_token(expired, issuer=issuer, verify_exp=False)["sub"] == "user-1"  # remembered now
        with pytest.raises(jws.InvalidSignature):  # and yet still refused where expiry counts
            signer.verify_id_token(expired, issuer=issuer)

    # An RS256 token, verified (and remembered) as an ID token, is never an access or user token:
    # those stay ES256 only.
    rs256 = signer.sign(id_token_claims(issuer, jti=str(uuid.uuid4())), "JWT", alg="RS256")
    signer.verify_id_token(rs256, issuer=issuer)
    with pytest.raises(jws.InvalidSignature):
        signer.verify(rs256, typ="JWT", issuer=issuer)
    with pytest.raises(InvalidToken):
        await accounts.authenticate(ctx, rs256)
    # A user token (typ JWT, ES256, no aud) is not an ID token; an access token neither.
    with pytest.raises(jws.InvalidSignature):
        signer.verify_id_token(flow.user_token, issuer=issuer)
    access = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    with pytest.raises(jws.InvalidSignature):
        signer.verify_id_token(access, issuer=issuer)
    # The RSA key under an ES256 header, or the EC key under RS256: refused.
    es256 = signer.sign(id_token_claims(issuer), "JWT", alg="ES256")
    for token, other in ((rs256, "ES256"), (es256, "RS256")):
        head, body, signature = token.split(".")
        swapped = jwt.utils.base64url_encode(
            json.dumps({**jwt.get_unverified_header(token), "alg": other}).encode()
        ).decode()
        with pytest.raises(jws.InvalidSignature):
            signer.verify_id_token(f"{swapped}.{body}.{signature}", issuer=issuer)
    with pytest.raises(ValueError):
        signer.sign(id_token_claims(issuer), "JWT", alg="HS256")


def test_a_verified_token_is_refused_once_it_expires_and_a_new_key_set_trusts_nothing_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The signer remembers the tokens it verified (grantd.crypto.jws): that memory must not outlive
    a token's exp, nor the key set it was verified under."""
    now = int(jws.time.time())
    old, new = jws.new_private_key(), jws.new_private_key()

    def signer(key: Any, kid: str) -> jws.Signer:
        jwk = jws.public_jwk(key.public_key(), kid)
        return jws.Signer([jws.SigningKey(kid, key)], [jwk], reload_at=now + 30)

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
