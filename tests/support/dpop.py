"""DPoP (RFC 9449) from a client's side: a key pair and the proofs it signs, built with PyJWT and
cryptography, its thumbprint computed by RFC 7638's own recipe (not by grantd's code); what a
client reads back from a token; a code of the hosted pages (with PKCE), redeemed with a proof.

Used by the tests of grantd's DPoP (tests/test_dpop.py), of the FAPI 2.0 profile, which requires it
(tests/test_fapi2.py), and of grantd.sdk against a real server (tests/test_sdk_dpop_server.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from support.interop import consent
from support.neucron import Flow


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jkt_of(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: the required members, sorted, no white space, SHA-256, base64url."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = "{" + ",".join(f'"{name}":"{jwk[name]}"' for name in required) + "}"
    return b64url(hashlib.sha256(canonical.encode()).digest())


class Holder:
    """A client's DPoP key pair, and the proofs it signs (RFC 9449 §4.2)."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))

    @property
    def jkt(self) -> str:
        return jkt_of(self.jwk)

    def proof(
        self, method: str, url: str, *, token: str | None = None, nonce: str | None = None,
        header: dict[str, Any] | None = None, key: Any = None, alg: str | None = None, **claims: Any,
    ) -> str:
        """A proof for a request of ``method`` to ``url``; ``token``: the access token it goes with
        (``ath``). A claim given as None is left out."""
        body: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            body["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        headers = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return jwt.encode(body, self.private if key is None else key, algorithm=alg or self.alg, headers=headers)


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims as a client reads them, without checking the signature."""
    return jwt.decode(token, options={"verify_signature": False})


def pkce() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636 §4.2)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


async def code_for(app: Flow, base: str, **more: str) -> tuple[str, str]:
    """The app's end user signs in and consents on the hosted pages: a code (openid read_profile) and its PKCE verifier."""
    verifier, challenge = pkce()
    query = {
        "response_type": "code", "client_id": app.app_id, "redirect_uri": app.redirect_uri, "scope": "openid read_profile",
        "state": secrets.token_hex(4), "code_challenge": challenge, "code_challenge_method": "S256", **more,
    }
    location = await consent(app, f"{base}/oauth2/authorize?{urlencode(query)}")
    got = parse_qs(urlsplit(location).query)
    assert "code" in got, location
    return got["code"][0], verifier


async def redeem(app: Flow, base: str, code: str, verifier: str, proof: str | None) -> httpx.Response:
    """The code redeemed at ``/oauth2/token`` with the DPoP ``proof`` (None: without one); a public
    client (``key_secret`` "") sends only its client_id."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri, "code_verifier": verifier}
    auth = None if app.key_secret == "" else (app.app_id, app.key_secret)
    if auth is None:
        form["client_id"] = app.app_id
    return await app.client.post("/oauth2/token", data=form, auth=auth, headers={"DPoP": proof} if proof else {})
