"""An app's public keys for RFC 7523 ``private_key_jwt``: a JWK Set registered by value (``jwks``)
or published at ``jwks_uri`` (RFC 7591 §2).

- ``check_jwks``: the rule of the ``jwks`` setting: a JWK Set of at most ``MAX_KEYS`` public keys
  of the kinds ``ALGORITHMS`` sign with (RSA, EC P-256, OKP Ed25519), no private member, at most
  ``MAX_JWKS_BYTES``; held as compact JSON text.
- ``keys_of``: the keys to verify an app's assertion with: its ``jwks``, else its ``jwks_uri``
  fetched (https; ``MAX_JWKS_BYTES`` at most, short timeouts, no redirects) and cached for
  ``CACHE_SECONDS``. An address that is private, loopback, link-local or otherwise not global
  is refused unless the operator allows it (``GRANTD_JWKS_URI_ALLOW_PRIVATE_ADDRESSES``): a
  client must not make the server reach into its own network. The host is resolved once and the
  connection goes to the address checked (``_Pinned``), so a DNS answer that changes in between
  (DNS rebinding) cannot reach an address that was not checked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import jwt

from grantd.core.errors import InvalidClient, InvalidRequest

if TYPE_CHECKING:
    import httpcore
    import httpx

# The assertion algorithms accepted (RFC 7518 names): never none, never HMAC (a shared secret).
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
MAX_KEYS = 10
MAX_JWKS_BYTES = 16 * 1024
CACHE_SECONDS = 300
# A key not found in a cached set refetches it, at most this often (a key rotated in by the app).
REFETCH_SECONDS = 30
TIMEOUT = {"connect": 2.0, "read": 3.0, "write": 3.0, "pool": 3.0}  # seconds each step may take (httpcore's)
TOTAL_SECONDS = 5.0  # the whole fetch, however slowly the answer comes
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


async def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system's resolver), in its order of preference."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


async def _checked_address(host: str, port: int, allow_private: bool, what: str = "The app's jwks_uri") -> str:
    """The one address to connect to for ``host``, resolved once: each address it resolves to must
    be global unless ``allow_private``. The connection then goes to that address and no other
    (``_Pinned``): a DNS answer that changes between this check and the connection (DNS rebinding)
    cannot send it to an address that was not checked."""
    try:
        addresses = await _resolve(host, port)
    except (OSError, UnicodeError):
        raise InvalidClient(f"{what} cannot be resolved.") from None
    if not addresses:
        raise InvalidClient(f"{what} cannot be resolved.")
    if not allow_private:
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise InvalidClient(f"{what} resolves to an address that is not public.")
    return addresses[0]


class _Pinned:
    """A network backend (an httpcore ``AsyncNetworkBackend``) that connects to one address, whatever
    host it is asked for: the request keeps the URL's host name (its ``Host`` header, the TLS server
    name and the certificate's check), and the socket goes to the address ``_checked_address``
    checked."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._backend = _http().httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._backend.connect_tcp(
            self._address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise _http().httpcore.ConnectError("jwks_uri: no Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


async def fetch(
    uri: str,
    *,
    allow_private: bool,
    limit: int = MAX_JWKS_BYTES,
    what: str = "The app's jwks_uri",
    read: Callable[[bytes, httpx.Headers], T] | None = None,
) -> Any:
    """The JWK Set at ``uri``, checked (``check_jwks``); InvalidClient when it cannot be had. Its
    host is resolved once and the connection made to the address checked (``_checked_address``);
    ``TIMEOUT`` per step, ``TOTAL_SECONDS`` in all, ``limit`` bytes at most, no redirect.

    The same safe fetch serves another document an app publishes (a client ID metadata
    document): ``read`` then makes the answer of its body and headers, and ``what`` names the
    document in the errors."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname or not uri.isascii():
        raise InvalidClient(f"{what} is not a URL.")
    if parts.scheme == "http" and not allow_private:
        raise InvalidClient(f"{what} must be https.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidClient(f"{what} is not a URL.") from None
    address = await _checked_address(parts.hostname, port, allow_private, what)
    http = _http()
    try:
        async with asyncio.timeout(TOTAL_SECONDS):
            body, headers = await _get(uri, address, limit, what)
    except http.fetch_errors:
        raise InvalidClient(f"{what} could not be fetched.") from None
    if read is not None:
        return read(body, headers)
    try:
        return check_jwks(body.decode("utf-8"))
    except (InvalidRequest, UnicodeDecodeError):
        raise InvalidClient("The app's jwks_uri holds no valid JWK Set of public keys.") from None


async def _get(uri: str, address: str, limit: int, what: str) -> tuple[bytes, httpx.Headers]:
    """GET ``uri`` over a connection to ``address``: the body of a 200, at most ``limit`` bytes, and
    its headers."""
    async with _http().httpcore.AsyncConnectionPool(
        ssl_context=_ssl_context(), network_backend=_Pinned(address), max_connections=1, retries=0
    ) as pool:
        async with pool.stream(
            "GET", uri, headers=[(b"Accept", b"application/json")], extensions={"timeout": TIMEOUT}
        ) as response:
            if response.status != 200:
                raise InvalidClient(f"{what} answered {response.status}.")
            body = b""
            async for chunk in response.aiter_stream():
                body += chunk
                if len(body) > limit:
                    raise InvalidClient(f"{what} is larger than {limit} bytes.")
    return body, _http().httpx.Headers(response.headers)


def _ssl_context() -> ssl.SSLContext:
    """The certificate authorities httpx trusts (certifi's), hosts checked."""
    return _http().httpx.create_ssl_context()


@functools.cache
def _http() -> SimpleNamespace:
    """httpcore (the connection) and httpx (its headers, its TLS context), imported on the first
    fetch: only a jwks_uri or a client ID metadata document needs them. Imported with grantd they
    cost every server process ~6 MB and ~0.1 s of its start (with httpx's command-line tool's
    rich, pygments and click)."""
    import httpcore
    import httpx

    fetch_errors = (
        httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
        OSError, TimeoutError, ssl.SSLError,
    )
    return SimpleNamespace(httpcore=httpcore, httpx=httpx, fetch_errors=fetch_errors)
