"""An app's public keys for RFC 7523 ``private_key_jwt``: a JWK Set registered by value (``jwks``)
or published at ``jwks_uri`` (RFC 7591 §2).

- ``check_jwks``: the rule of the ``jwks`` setting: a JWK Set of at most ``MAX_KEYS`` public keys
  of the kinds ``ALGORITHMS`` sign with (RSA, EC P-256, OKP Ed25519), no private member, at most
  ``MAX_JWKS_BYTES``; held as compact JSON text.
- ``keys_of``: the keys to verify an app's assertion with: its ``jwks``, else its ``jwks_uri``
  fetched (https; ``MAX_JWKS_BYTES`` at most, short timeouts, no redirects) and cached for
  ``CACHE_SECONDS``. An address that is private, loopback, link-local or otherwise not global
  is refused unless the operator allows it (``GRANTD_JWKS_URI_ALLOW_PRIVATE_ADDRESSES``): a
  client must not make the server reach into its own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import jwt

from grantd.core.errors import InvalidClient, InvalidRequest

# The assertion algorithms accepted (RFC 7518 names): never none, never HMAC (a shared secret).
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
MAX_KEYS = 10
MAX_JWKS_BYTES = 16 * 1024
CACHE_SECONDS = 300
# A key not found in a cached set refetches it, at most this often (a key rotated in by the app).
REFETCH_SECONDS = 30
TIMEOUT = httpx.Timeout(3.0, connect=2.0)
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_KINDS = {"RSA": None, "EC": "P-256", "OKP": "Ed25519"}
T = TypeVar("T")


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, field="jwks")


def _check_key(key: Any) -> None:
    if not isinstance(key, dict) or not all(isinstance(name, str) for name in key):
        raise _refuse("jwks: every key must be a JSON object.")
    kty = key.get("kty")
    if kty not in _KINDS:
        raise _refuse("jwks: kty must be RSA, EC (P-256) or OKP (Ed25519).")
    if _KINDS[kty] is not None and key.get("crv") != _KINDS[kty]:
        raise _refuse(f"jwks: a {kty} key must be on the curve {_KINDS[kty]}.")
    if any(name in key for name in _PRIVATE_MEMBERS):
        raise _refuse("jwks: public keys only (no private member such as d).")
    if key.get("alg") is not None and key["alg"] not in ALGORITHMS:
        raise _refuse(f"jwks: alg must be one of: {', '.join(ALGORITHMS)}.")
    if key.get("use") not in (None, "sig"):
        raise _refuse("jwks: use must be sig.")
    if key.get("kid") is not None and not isinstance(key["kid"], str):
        raise _refuse("jwks: kid must be a string.")
    try:
        jwt.PyJWK(key, key.get("alg") or ("RS256" if kty == "RSA" else "ES256" if kty == "EC" else "EdDSA"))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise _refuse(f"jwks: a key is not a valid public key ({type(exc).__name__}).") from None


def check_jwks(value: Any) -> str:
    """A JWK Set (an object, or its JSON text) as compact JSON text; InvalidRequest otherwise."""
    if isinstance(value, str):
        if len(value.encode()) > MAX_JWKS_BYTES:
            raise _refuse(f"jwks may be at most {MAX_JWKS_BYTES} bytes.")
        try:
            value = json.loads(value)
        except ValueError:
            raise _refuse("jwks must be a JWK Set: a JSON object with keys.") from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise _refuse("jwks must be a JWK Set: a JSON object with a non-empty list of keys.")
    if len(value["keys"]) > MAX_KEYS:
        raise _refuse(f"jwks may hold at most {MAX_KEYS} keys.")
    for key in value["keys"]:
        _check_key(key)
    text = json.dumps({"keys": value["keys"]}, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > MAX_JWKS_BYTES:
        raise _refuse(f"jwks may be at most {MAX_JWKS_BYTES} bytes.")
    return text


def candidates(jwks_text: str, kid: str | None, alg: str) -> list[Any]:
    """The keys of a checked set that may have signed with ``alg`` (and ``kid``, when named):
    PyJWT key objects."""
    kty = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}[alg]
    found = []
    for key in json.loads(jwks_text)["keys"]:
        if key.get("kty") != kty or key.get("alg") not in (None, alg) or (kid is not None and key.get("kid") != kid):
            continue
        try:
            found.append(jwt.PyJWK(key, alg).key)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
    return found


class JwksCache:
    """The JWK Sets fetched from apps' ``jwks_uri``, per URI, for ``CACHE_SECONDS`` (one per process)."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, uri: str, *, allow_private: bool, refresh: bool = False) -> str:
        now = time.monotonic()
        cached = self._sets.get(uri)
        if cached is not None and now < cached[0] and not (refresh and now > cached[0] - CACHE_SECONDS + REFETCH_SECONDS):
            return cached[1]
        lock = self._locks.setdefault(uri, asyncio.Lock())
        async with lock:
            cached = self._sets.get(uri)
            if cached is not None and time.monotonic() - (cached[0] - CACHE_SECONDS) < REFETCH_SECONDS:
                return cached[1]
            text = await fetch(uri, allow_private=allow_private)
            if len(self._sets) > 1000:
                self._sets.clear()
            self._sets[uri] = (time.monotonic() + CACHE_SECONDS, text)
            return text


CACHE = JwksCache()


async def _check_address(host: str, port: int, allow_private: bool, what: str = "The app's jwks_uri") -> None:
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidClient(f"{what} cannot be resolved.") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise InvalidClient(f"{what} resolves to an address that is not public.")


async def fetch(
    uri: str,
    *,
    allow_private: bool,
    limit: int = MAX_JWKS_BYTES,
    what: str = "The app's jwks_uri",
    read: Callable[[bytes, httpx.Headers], T] | None = None,
) -> Any:
    """The JWK Set at ``uri``, checked (``check_jwks``); InvalidClient when it cannot be had.

    The same safe fetch serves another document an app publishes (a client ID metadata
    document): ``read`` then makes the answer of its body (at most ``limit`` bytes) and headers,
    and ``what`` names the document in the errors."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidClient(f"{what} is not a URL.")
    if parts.scheme == "http" and not allow_private:
        raise InvalidClient(f"{what} must be https.")
    await _check_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow_private, what)
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            async with client.stream("GET", uri, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise InvalidClient(f"{what} answered {response.status_code}.")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise InvalidClient(f"{what} is larger than {limit} bytes.")
    except httpx.HTTPError:
        raise InvalidClient(f"{what} could not be fetched.") from None
    if read is not None:
        return read(body, response.headers)
    try:
        return check_jwks(body.decode("utf-8"))
    except (InvalidRequest, UnicodeDecodeError):
        raise InvalidClient("The app's jwks_uri holds no valid JWK Set of public keys.") from None
