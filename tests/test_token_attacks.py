"""Forged tokens: every one is refused, by the server on POST /oauth/authorize (a user token is
required) and by grantd.sdk's TokenVerifier on access tokens.

Where a claim is under test (exp, nbf, iss, aud), the forgery is signed with the server's own
active key, so that the claim check itself, not the signature, is what refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from grantd.sdk import InvalidTokenError, TokenVerifier
from support.neucron import Flow


SKEW = 30  # the leeway of both the server (crypto/jws.py) and the SDK's default
Forge = Callable[[str], str]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def encode_unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def hmac_signed(token: str, secret: bytes) -> str:
    """The token's claims under ``alg: HS256`` (same kid and typ), MACed with ``secret``: algorithm confusion."""
    header, claims = parts(token)
    header["alg"] = "HS256"
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


class Forger:
    """Makes forgeries of a genuine token, knowing what an attacker (or the server) holds."""

    def __init__(self, app: Any, jwks: dict[str, Any]) -> None:
        self.active = app.state.ctx.signing.active["ES256"]  # the server's real key: for claim-only forgeries
        self.rsa = app.state.ctx.signing.active["RS256"]  # its RSA key, which signs ID tokens only
        self.jwks = jwks
        self.attacker = ec.generate_private_key(ec.SECP256R1())

    def resign(self, token: str, *, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        header, body = parts(token)
        body.update(claims)
        header["kid"] = kid or header["kid"]
        return jwt.encode(body, key or self.active.private_key, algorithm="ES256", headers=header)

    def rs256(self, token: str, *, kid: str | None = None) -> str:
        """The token's claims signed RS256 with the server's real RSA key (the one for ID tokens)."""
        header, body = parts(token)
        return jwt.encode(body, self.rsa.private_key, algorithm="RS256", headers={**header, "alg": "RS256", "kid": kid or self.rsa.kid})

    def public_pem(self, token: str) -> bytes:
        kid = parts(token)[0]["kid"]
        jwk = next(k for k in self.jwks["keys"] if k["kid"] == kid)
        return jwt.PyJWK(jwk).key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_jwk(self, token: str) -> bytes:
        kid = parts(token)[0]["kid"]
        return json.dumps(next(k for k in self.jwks["keys"] if k["kid"] == kid)).encode()

    def attacks(self) -> dict[str, Forge]:
        now = int(time.time())
        return {
            "alg none": lambda t: encode_unsigned({**parts(t)[0], "alg": "none"}, parts(t)[1]),
            "alg none, no kid": lambda t: encode_unsigned({"alg": "none", "typ": parts(t)[0]["typ"]}, parts(t)[1]),
            "HS256 with the public key (PEM)": lambda t: hmac_signed(t, self.public_pem(t)),
            "HS256 with the public key (JWK)": lambda t: hmac_signed(t, self.public_jwk(t)),
            "a foreign kid": lambda t: self.resign(t, key=self.attacker, kid="attacker-key-1"),
            "an attacker's key under the real kid": lambda t: self.resign(t, key=self.attacker),
            "expired exp": lambda t: self.resign(t, iat=now - 7200, nbf=now - 7200, exp=now - SKEW - 60),
            "nbf in the future beyond the skew": lambda t: self.resign(t, nbf=now + SKEW + 300),
            "wrong iss": lambda t: self.resign(t, iss="https://evil.example"),
            "claims changed, signature kept": lambda t: ".".join(
                [t.split(".")[0], b64(json.dumps({**parts(t)[1], "sub": "someone-else"}).encode()), t.split(".")[2]]
            ),
            "truncated signature": lambda t: t[:-10],
            "signature removed": lambda t: t.rsplit(".", 1)[0] + ".",
            "RS256 with the server's RSA key": lambda t: self.rs256(t),
            "RS256 under the ES256 kid": lambda t: self.rs256(t, kid=parts(t)[0]["kid"]),
        }


@pytest.fixture
async def forger(app: Any, client: httpx.AsyncClient) -> Forger:
    return Forger(app, (await client.get("/.well-known/jwks.json")).json())


async def access_token(flow: Flow) -> str:
    response = await flow.redeem(await flow.code())
    assert response.status_code == 200, response.text
    return response.json()["data"]["access_token"]


async def app_token(flow: Flow) -> str:
    response = await flow.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(flow.app_id, flow.key_secret)
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def authorize_with(flow: Flow, token: str) -> httpx.Response:
    return await flow.client.post("/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": f"Bearer {token}"})


class InProcessVerifier(TokenVerifier):
    """The SDK's verifier reading discovery and the JWKS from the in-process app."""

    def __init__(self, client: httpx.AsyncClient, audience: str, **kwargs: Any) -> None:
        super().__init__("http://testserver", audience, **kwargs)
        self._in_process = client

    async def _aget_json(self, url: str) -> Any:
        response = await self._in_process.get(url)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def verifier(client: httpx.AsyncClient, settings: Any) -> InProcessVerifier:
    return InProcessVerifier(client, settings.audience)


# ---------------------------------------------------------------- the server: user tokens


async def test_the_genuine_user_token_is_accepted(flow: Flow) -> None:
    response = await authorize_with(flow, flow.user_token)
    assert response.status_code == 200, response.text


async def test_every_forged_user_token_is_refused_by_the_server(flow: Flow, forger: Forger) -> None:
    accepted = {}
    for name, forge in forger.attacks().items():
        forged = forge(flow.user_token)
        response = await authorize_with(flow, forged)
        if response.status_code != 401 or response.json().get("error") != "invalid_token":
            accepted[name] = (response.status_code, response.text[:200])
    assert not accepted, accepted


async def test_an_access_token_is_refused_where_a_user_token_is_required(flow: Flow) -> None:
    for token in (await access_token(flow), await app_token(flow)):
        for authorization in (f"Bearer {token}", token):
            response = await flow.client.post(
                "/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": authorization}
            )
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "invalid_token"


async def test_a_user_token_with_an_access_token_typ_is_refused(flow: Flow, forger: Forger) -> None:
    """Even signed with the real key: typ at+jwt is never a user token (and vice versa)."""
    header, claims = parts(flow.user_token)
    forged = jwt.encode(claims, forger.active.private_key, algorithm="ES256", headers={**header, "typ": "at+jwt"})
    response = await authorize_with(flow, forged)
    assert response.status_code == 401 and response.json()["error"] == "invalid_token", response.text


# ---------------------------------------------------------------- the SDK: access tokens


async def test_the_genuine_access_token_is_accepted_by_the_sdk(flow: Flow, verifier: InProcessVerifier) -> None:
    token = await verifier.averify(await access_token(flow))
    assert token.user_id == flow.user_id and token.app_id == flow.app_id


async def test_every_forged_access_token_is_refused_by_the_sdk(
    flow: Flow, forger: Forger, verifier: InProcessVerifier
) -> None:
    genuine = await access_token(flow)
    attacks = forger.attacks()
    attacks["wrong aud"] = lambda t: forger.resign(t, aud="https://api.other.example")
    attacks["aud missing"] = lambda t: jwt.encode(
        {k: v for k, v in parts(t)[1].items() if k != "aud"}, forger.active.private_key, algorithm="ES256", headers=parts(t)[0]
    )
    # Each is refused for its own reason: the check under attack is the one that holds.
    expected = {
        "alg none": {"unsupported_algorithm"},
        "alg none, no kid": {"unsupported_algorithm"},
        "HS256 with the public key (PEM)": {"unsupported_algorithm"},
        "HS256 with the public key (JWK)": {"unsupported_algorithm"},
        "a foreign kid": {"unknown_key"},
        "an attacker's key under the real kid": {"bad_signature"},
        "expired exp": {"expired"},
        "nbf in the future beyond the skew": {"not_yet_valid"},
        "wrong iss": {"wrong_issuer"},
        "claims changed, signature kept": {"bad_signature"},
        "truncated signature": {"bad_signature", "malformed"},
        "signature removed": {"bad_signature", "malformed"},
        "RS256 with the server's RSA key": {"unsupported_algorithm"},
        "RS256 under the ES256 kid": {"unsupported_algorithm"},
        "wrong aud": {"wrong_audience"},
        "aud missing": {"missing_claim"},
    }
    assert set(expected) == set(attacks)
    wrong = {}
    for name, forge in attacks.items():
        try:
            await verifier.averify(forge(genuine))
        except InvalidTokenError as exc:
            if exc.reason not in expected[name]:
                wrong[name] = exc.reason
            continue
        wrong[name] = "accepted"
    assert not wrong, wrong


async def test_the_sdk_refuses_a_user_token(flow: Flow, verifier: InProcessVerifier) -> None:
    with pytest.raises(InvalidTokenError) as refused:
        await verifier.averify(flow.user_token)
    assert refused.value.reason == "wrong_type"


async def test_the_sdk_refuses_a_token_for_another_audience(flow: Flow, client: httpx.AsyncClient) -> None:
    other = InProcessVerifier(client, "https://api.other.example")
    with pytest.raises(InvalidTokenError) as refused:
        await other.averify(await access_token(flow))
    assert refused.value.reason == "wrong_audience"
