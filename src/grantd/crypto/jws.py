"""ES256 signing keys and compact JWS (PyJWT over cryptography).

A signing key's private half is kept in the database only encrypted
(AES-256-GCM under a key derived from the master secret, bound to the key id),
so every server process sharing the database signs with the same keys.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALGORITHM = "ES256"
ID_TOKEN_ALGORITHMS = ("RS256", "ES256")
LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
VERIFIED_CACHE_SIZE = 4096
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


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
        self._headers: dict[str, bytes] = {}
        # Tokens this signer has verified, with their claims: a signature does not change, and a
        # new Signer (a key reload) starts empty, so a token of a withdrawn key is never found here.
        self._verified: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}

    def sign(self, claims: dict[str, Any], typ: str, alg: str = ALGORITHM) -> str:  # interim: ES256 only
        """A compact JWS (RFC 7515 §7.1) with ES256 (RFC 7518 §3.4: the signature is R || S, 32 bytes each).

        Built here rather than by PyJWT: it is the token endpoint's largest single cost, and
        PyJWT's generic path (header merging, key preparation, JSON of the header) adds half
        again to the signature itself. Tokens are verified with PyJWT (and, in the tests, with
        jose and Authlib)."""
        header = self._headers.get(typ)
        if header is None:
            header_json = json.dumps({"alg": ALGORITHM, "kid": self.active.kid, "typ": typ}, separators=(",", ":"))
            header = self._headers[typ] = _b64url(header_json.encode())
        signing_input = header + b"." + _b64url(orjson.dumps(claims))
        r, s = decode_dss_signature(self.active.private_key.sign(signing_input, _ECDSA_SHA256))
        return (signing_input + b"." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode("ascii")

    def verify(self, token: str, *, typ: str, issuer: str, audience: str | None = None) -> dict[str, Any]:
        cache_key = (token, typ, issuer, audience)
        claims = self._verified.get(cache_key)
        if claims is not None:
            if claims["exp"] <= time.time() - LEEWAY:
                raise InvalidSignature("Signature has expired")
            return claims
        claims = self._verify(token, typ=typ, issuer=issuer, audience=audience)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[cache_key] = claims
        return claims

    def _verify(self, token: str, *, typ: str, issuer: str, audience: str | None = None) -> dict[str, Any]:
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
                token, key, algorithms=[ALGORITHM], issuer=issuer, audience=audience, options=options, leeway=LEEWAY
            )
        except jwt.PyJWTError as exc:
            raise InvalidSignature(str(exc)) from exc

    def verify_id_token(self, token: str, *, issuer: str, audience: str | None) -> dict[str, Any]:
        """The claims of an ID token signed by a published key (OpenID Connect's ``id_token_hint``):
        its signature, issuer and audience (unless None), expired or not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidSignature("malformed token") from exc
        key = self.published.get(header.get("kid", ""))
        if key is None or header.get("alg") not in ID_TOKEN_ALGORITHMS:
            raise InvalidSignature("unknown key")
        options = {"require": ["iat", "iss", "sub", "aud"], "verify_aud": audience is not None, "verify_exp": False}
        try:
            return jwt.decode(
                token, key, algorithms=[header["alg"]], issuer=issuer, audience=audience, options=options, leeway=LEEWAY
            )
        except jwt.PyJWTError as exc:
            raise InvalidSignature(str(exc)) from exc
