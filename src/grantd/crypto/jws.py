"""ES256 signing keys and compact JWS (PyJWT over cryptography).

A signing key's private half is kept in the database only encrypted
(AES-256-GCM under a key derived from the master secret, bound to the key id),
so every server process sharing the database signs with the same keys.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALGORITHM = "ES256"


def _b64url_uint(value: int, length: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).rstrip(b"=").decode()


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePublicKey, kid: str) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url_uint(numbers.x, 32),
        "y": _b64url_uint(numbers.y, 32),
        "kid": kid,
        "use": "sig",
        "alg": ALGORITHM,
    }


def public_key_from_jwk(jwk: dict[str, str]) -> ec.EllipticCurvePublicKey:
    return jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))  # type: ignore[return-value]


class KeySealer:
    """Encrypts private keys at rest: AES-256-GCM, nonce || ciphertext, the kid as associated data."""

    def __init__(self, master_secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"grantd signing-key sealing v1").derive(
            master_secret
        )
        self._aead = AESGCM(key)

    def seal(self, key: ec.EllipticCurvePrivateKey, kid: str) -> bytes:
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, der, kid.encode())

    def open(self, sealed: bytes, kid: str) -> ec.EllipticCurvePrivateKey:
        der = self._aead.decrypt(sealed[:12], sealed[12:], kid.encode())
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


class InvalidSignature(Exception):
    """The token is not a JWS we signed, or its claims do not hold."""


class Signer:
    """Signs with the active key; verifies against every published key."""

    def __init__(
        self,
        active: SigningKey,
        published: dict[str, ec.EllipticCurvePublicKey],
        jwks: list[dict[str, str]],
        reload_at: int,
    ) -> None:
        self.active = active
        self.published = published
        self.jwks_document = json.dumps({"keys": jwks}, separators=(",", ":")).encode()
        self.reload_at = reload_at  # Unix time by which the keys are to be read again

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(
            claims, self.active.private_key, algorithm=ALGORITHM, headers={"kid": self.active.kid, "typ": typ}
        )

    def verify(self, token: str, *, typ: str, issuer: str, audience: str | None = None) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidSignature("malformed token") from exc
        if header.get("alg") != ALGORITHM or header.get("typ") != typ:
            raise InvalidSignature("unexpected token type")
        key = self.published.get(header.get("kid", ""))
        if key is None:
            raise InvalidSignature("unknown key")
        options = {"require": ["exp", "iat", "iss", "sub", "jti"], "verify_aud": audience is not None}
        try:
            return jwt.decode(
                token, key, algorithms=[ALGORITHM], issuer=issuer, audience=audience, options=options, leeway=30
            )
        except jwt.PyJWTError as exc:
            raise InvalidSignature(str(exc)) from exc
