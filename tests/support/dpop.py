"""DPoP (RFC 9449) from a client's side: a key pair and the proofs it signs, built with PyJWT and
cryptography, its thumbprint computed by RFC 7638's own recipe (not by grantd's code); and what a
client reads back from a token.

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

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


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
