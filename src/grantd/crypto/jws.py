"""Signing keys and compact JWS: ES256 and RS256 (PyJWT over cryptography).

Each process holds one active key per algorithm: ES256 signs access tokens and user tokens,
RS256 (and ES256, per app) signs OpenID Connect ID tokens. A signing key's private half is kept
in the database only encrypted (AES-256-GCM under a key derived from the master secret, bound
to the key id), so every server process sharing the database signs with the same keys.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ES256 = "ES256"  # RFC 7518 §3.4: ECDSA P-256 SHA-256
RS256 = "RS256"  # RFC 7518 §3.3: RSASSA-PKCS1-v1_5 SHA-256; OpenID Connect Discovery requires it for ID tokens
ALGORITHM = ES256  # access tokens' and user tokens' algorithm, and Signer.sign's default
ALGORITHMS = (ES256, RS256)  # an active key of each is kept (core/signing_keys.py)
RSA_KEY_SIZE = 2048
RSA_PUBLIC_EXPONENT = 65537
LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
VERIFIED_CACHE_SIZE = 4096
# The claims every token grantd signs carries; an ID token (OpenID Connect Core §2) need not have
# jti but always has aud, which no user token has: ``verify_id_token`` requires these instead.
REQUIRED_CLAIMS = ("exp", "iat", "iss", "sub", "jti")
ID_TOKEN_TYPE = "JWT"
ID_TOKEN_REQUIRED_CLAIMS = ("exp", "iat", "iss", "sub", "aud")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64url_uint(value: int, length: int | None = None) -> str:
    """RFC 7518 §2 Base64urlUInt: big-endian, ``length`` bytes (an EC coordinate's fixed size) or the fewest."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def new_private_key(algorithm: str = ES256) -> PrivateKey:
    """A new key for ``algorithm``: a P-256 key for ES256, a 2048-bit RSA key (e = 65537) for RS256."""
    if algorithm == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == RS256:
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_SIZE)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    """The JWS algorithm a key of this type signs with here."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return ES256
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size >= RSA_KEY_SIZE:
        return RS256
    raise ValueError(f"not a signing key of {ALGORITHMS}: {type(key).__name__}")


def public_jwk(key: PublicKey, kid: str) -> dict[str, str]:
    """The key's JWK (RFC 7517 §4, RFC 7518 §6), with ``kid``, ``use: sig`` and its ``alg``."""
    algorithm = algorithm_of(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        numbers = key.public_numbers()
        members = {"kty": "EC", "crv": "P-256", "x": _b64url_uint(numbers.x, 32), "y": _b64url_uint(numbers.y, 32)}
    else:
        rsa_numbers = key.public_numbers()
        members = {"kty": "RSA", "n": _b64url_uint(rsa_numbers.n), "e": _b64url_uint(rsa_numbers.e)}
    return {**members, "kid": kid, "use": "sig", "alg": algorithm}


def public_key_from_jwk(jwk: dict[str, str]) -> PublicKey:
    algorithm = jwt.algorithms.RSAAlgorithm if jwk.get("kty") == "RSA" else jwt.algorithms.ECAlgorithm
    key = algorithm.from_jwk(json.dumps(jwk))
    if jwk.get("alg") != algorithm_of(key):  # type: ignore[arg-type]
        raise ValueError(f"JWK {jwk.get('kid')!r}: alg {jwk.get('alg')!r} does not fit its key")
    return key  # type: ignore[return-value]


class KeySealer:
    """Encrypts secrets the server must read back (signing keys' private halves, one-time-code
    secrets) at rest: AES-256-GCM, nonce || ciphertext, what the secret belongs to (a kid, a
    purpose and user) as associated data, so a sealed value cannot be moved to another row."""

    def __init__(self, master_secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"grantd signing-key sealing v1").derive(
            master_secret
        )
        self._aead = AESGCM(key)

    def seal(self, key: PrivateKey, kid: str) -> bytes:
        """The key's PKCS#8 DER (EC or RSA alike), encrypted."""
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return self.seal_bytes(der, kid)

    def seal_bytes(self, data: bytes, bound_to: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, bound_to.encode())

    def open_bytes(self, sealed: bytes, bound_to: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], bound_to.encode())

    def open(self, sealed: bytes, kid: str) -> PrivateKey:
        der = self.open_bytes(sealed, kid)
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"signing key {kid} is a {type(key).__name__}")
        return key


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: PrivateKey

    @property
    def algorithm(self) -> str:
        return algorithm_of(self.private_key)


class InvalidSignature(Exception):
    """The token is not a JWS we signed, or its claims do not hold."""


class Signer:
    """Signs with the active key of the asked algorithm; verifies against every published key."""

    def __init__(self, active: Iterable[SigningKey], jwks: list[dict[str, str]], reload_at: int) -> None:
        self.active: dict[str, SigningKey] = {key.algorithm: key for key in active}  # by algorithm
        # kid → (its algorithm, its public key), for every published key of either algorithm
        self.published: dict[str, tuple[str, PublicKey]] = {
            jwk["kid"]: (jwk["alg"], public_key_from_jwk(jwk)) for jwk in jwks
        }
        self.jwks_document = json.dumps({"keys": jwks}, separators=(",", ":")).encode()
        self.reload_at = reload_at  # Unix time by which the keys are to be read again
        self._headers: dict[str, dict[str, bytes]] = {algorithm: {} for algorithm in ALGORITHMS}  # alg → typ → header
        self._es256_headers = self._headers[ES256]
        es256, rs256 = self.active.get(ES256), self.active.get(RS256)
        self._es256_key = es256.private_key if es256 is not None else None
        self._rs256_key = rs256.private_key if rs256 is not None else None
        # Tokens this signer has verified, with their claims: a signature does not change, and a
        # new Signer (a key reload) starts empty, so a token of a withdrawn key is never found here.
        self._verified: dict[tuple[Any, ...], dict[str, Any]] = {}

    def sign(self, claims: dict[str, Any], typ: str, alg: str = ES256) -> str:
        """A compact JWS (RFC 7515 §7.1) signed with the active key of ``alg``: ES256 (RFC 7518 §3.4:
        the signature is R || S, 32 bytes each) or RS256 (§3.3: RSASSA-PKCS1-v1_5 with SHA-256).

        Built here rather than by PyJWT: ES256 is the token endpoint's largest single cost, and
        PyJWT's generic path (header merging, key preparation, JSON of the header) adds half
        again to the signature itself. RS256 takes the same path (cryptography's PKCS1v15 +
        SHA-256), so both are one code. Tokens are verified with PyJWT (and, in the tests, with
        jose and Authlib)."""
        if alg == ES256:  # access tokens and user tokens: the hot path
            header = self._es256_headers.get(typ) or self._header(ES256, typ)
            signing_input = header + b"." + _b64url(orjson.dumps(claims))
            r, s = decode_dss_signature(self._es256_key.sign(signing_input, _ECDSA_SHA256))  # type: ignore[union-attr]
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == RS256:
            header = self._headers[RS256].get(typ) or self._header(RS256, typ)
            signing_input = header + b"." + _b64url(orjson.dumps(claims))
            signature = self._rs256_key.sign(signing_input, _PKCS1V15, _SHA256)  # type: ignore[union-attr]
        else:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        return (signing_input + b"." + _b64url(signature)).decode("ascii")

    def _header(self, alg: str, typ: str) -> bytes:
        """The encoded header of ``alg``'s active key for ``typ``, built once."""
        key = self.active.get(alg)
        if key is None:
            raise LookupError(f"no active {alg} signing key")
        header_json = json.dumps({"alg": alg, "kid": key.kid, "typ": typ}, separators=(",", ":"))
        header = self._headers[alg][typ] = _b64url(header_json.encode())
        return header

    def verify(
        self,
        token: str,
        *,
        typ: str,
        issuer: str,
        audience: str | None = None,
        algorithms: tuple[str, ...] = (ES256,),
        verify_exp: bool = True,
        require: tuple[str, ...] = REQUIRED_CLAIMS,
    ) -> dict[str, Any]:
        """The claims of a token this server signed: its header's ``alg`` one of ``algorithms``
        and ``typ`` exactly ``typ``, its ``kid`` published (and of that algorithm), the signature,
        ``iss``, ``aud`` (when ``audience`` is given), ``exp`` (unless ``verify_exp`` is false),
        ``nbf`` and ``iat`` with ``LEEWAY``, and every claim of ``require`` present.

        Remembered per token and per every one of these parameters (hence tuples, not lists), so a
        token verified one way is never answered from memory for a call that asks otherwise."""
        cache_key = (token, typ, issuer, audience, algorithms, verify_exp, require)
        claims = self._verified.get(cache_key)
        if claims is not None:
            if verify_exp and claims["exp"] <= time.time() - LEEWAY:
                raise InvalidSignature("Signature has expired")
            return claims
        claims = self._verify(
            token, typ=typ, issuer=issuer, audience=audience, algorithms=algorithms, verify_exp=verify_exp, require=require
        )
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[cache_key] = claims
        return claims

    def verify_id_token(
        self, token: str, *, issuer: str, audience: str | None = None, verify_exp: bool = True
    ) -> dict[str, Any]:
        """The claims of an ID token this server issued (OpenID Connect Core §2), RS256 or ES256,
        ``typ: JWT``, with ``aud`` present (which keeps user tokens out) and checked when
        ``audience`` is given; ``verify_exp=False`` for an ``id_token_hint`` (§3.1.2.1), which
        may have expired."""
        return self.verify(
            token, typ=ID_TOKEN_TYPE, issuer=issuer, audience=audience, algorithms=ALGORITHMS,
            verify_exp=verify_exp, require=ID_TOKEN_REQUIRED_CLAIMS,
        )

    def _verify(
        self,
        token: str,
        *,
        typ: str,
        issuer: str,
        audience: str | None,
        algorithms: tuple[str, ...],
        verify_exp: bool,
        require: tuple[str, ...],
    ) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidSignature("malformed token") from exc
        alg = header.get("alg")
        if alg not in algorithms or header.get("typ") != typ:
            raise InvalidSignature("unexpected token type")
        published = self.published.get(header.get("kid", ""))
        if published is None:
            raise InvalidSignature("unknown key")
        key_alg, key = published
        if key_alg != alg:
            raise InvalidSignature("the key does not sign with the token's alg")
        options = {"require": list(require), "verify_aud": audience is not None, "verify_exp": verify_exp}
        try:
            return jwt.decode(
                token, key, algorithms=[alg], issuer=issuer, audience=audience, options=options, leeway=LEEWAY
            )
        except jwt.PyJWTError as exc:
            raise InvalidSignature(str(exc)) from exc
