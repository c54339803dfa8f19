"""Random identifiers and secrets, their keyed hashes, and constant-time comparison.

Every secret grantd hands out (app keys, key secrets, authorization codes) is 256
bits from the OS CSPRNG. Such a secret needs no slow hash: it cannot be guessed, so
HMAC-SHA256 under a server-side key (the "pepper", derived from the master secret)
is what is stored. A stolen database alone then yields nothing usable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid

KEY_SECRET_PREFIX = "gks_"
APP_KEY_PREFIX = "gak_"
KEY_ID_PREFIX = "key_"


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_token_id() -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48 bits of Unix time in milliseconds, then 74 random bits.

    Token ids (``jti``) are written once per token, as a primary key: ids made later sort later,
    so each insert lands at the end of the index instead of on a random page of it.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    # version 7 in bits 76-79, variant 0b10 in bits 62-63
    value = (value & ~(0xF << 76) & ~(0x3 << 62)) | (0x7 << 76) | (0x2 << 62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_secret() -> str:
    """256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def new_app_key() -> str:
    return APP_KEY_PREFIX + new_secret()


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(8)


def new_key_secret(key_id: str) -> str:
    """A key secret names its key: ``gks_<key id hex>_<256 random bits>``.

    So a client that sends only the secret (OAuth 2.0 ``client_secret``) still
    lets the server find the one key to compare against, in one indexed lookup.
    """
    return f"{KEY_SECRET_PREFIX}{key_id.removeprefix(KEY_ID_PREFIX)}_{new_secret()}"


def key_id_of_secret(key_secret: str) -> str | None:
    """The key id carried by a key secret, or None when it is not one of ours."""
    if not key_secret.startswith(KEY_SECRET_PREFIX):
        return None
    head, sep, _ = key_secret[len(KEY_SECRET_PREFIX):].partition("_")
    if not sep or len(head) != 16:
        return None
    return KEY_ID_PREFIX + head


class SecretHasher:
    """Keyed SHA-256 (HMAC) of secrets under a pepper derived from the master secret."""

    __slots__ = ("_pepper", "_successor_key")

    def __init__(self, master_secret: bytes) -> None:
        self._pepper = hmac.new(master_secret, b"grantd secret-hash pepper v1", hashlib.sha256).digest()
        self._successor_key = hmac.new(master_secret, b"grantd refresh successor v1", hashlib.sha256).digest()

    def hash(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def verify(self, secret: str, expected_hash: str) -> bool:
        return hmac.compare_digest(self.hash(secret), expected_hash)

    def successor(self, secret: str) -> str:
        """The secret that replaces ``secret`` on rotation: unguessable without both, and the same every time.

        So a refresh token presented twice within the grace window yields the same successor,
        and no successor need be stored in clear.
        """
        digest = hmac.new(self._successor_key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def s256(code_verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
