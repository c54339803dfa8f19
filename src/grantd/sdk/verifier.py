"""TokenVerifier: checks grantd's access tokens (RFC 9068 JWTs signed with ES256) offline,
and optionally online with token introspection (RFC 7662).

Offline, a token is valid when all of these hold:

- its header says ``alg: ES256``, ``typ: at+jwt`` (or ``application/at+jwt``), and names a
  ``kid`` of the issuer's JWKS;
- the signature verifies with that key;
- ``iss`` is the issuer, ``aud`` is (or contains) the audience;
- ``exp`` is not past and ``nbf``/``iat`` are not in the future, each with ``leeway`` seconds;
- ``sub``, ``client_id`` and ``jti`` are present.

The discovery document (RFC 8414) and the JWKS are fetched on first use, the keys kept by
``kid`` and re-read every ``jwks_max_age`` seconds. A token naming a ``kid`` the cache does
not know makes the verifier re-read the JWKS at once — at most once per
``min_refetch_interval`` seconds, so garbage tokens cannot make it hammer the issuer.
grantd publishes a new signing key ``GRANTD_SIGNING_KEY_ACTIVATION_DELAY`` seconds (600 by
default) before it signs, so the periodic re-read normally knows a key before its first token.

A token verified once is remembered (``cache_size`` tokens, by their exact text, with the key that
verified them), so the same token presented again skips the signature check, the costly part.
Everything else is checked again on every use: header, iss, aud, times and claims. The memory of a
token goes with its key: when the JWKS is read again (every ``jwks_max_age`` seconds) or a key
leaves it, the next use checks the signature again.

Online mode (``introspection=(client_id, client_secret)``) additionally asks the issuer's
introspection endpoint whether the token is still active, so a revocation is seen at once.
Answers are cached for ``introspection_cache_ttl`` seconds (0: ask on every request);
an inactive answer is cached until the token expires, since it cannot become active again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt

log = logging.getLogger("grantd.sdk")

ALGORITHM = "ES256"
# PyJWT checks the JWS (alg, signature, a JSON object of claims); TokenVerifier._accept checks the
# claims themselves, the same way for a token seen before, whose signature is not checked again.
_DECODE_OPTIONS: dict[str, Any] = {
    "verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False, "verify_iss": False,
}
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

#: Every ``InvalidTokenError.reason``, with what it means.
REASONS: Mapping[str, str] = MappingProxyType(
    {
        "missing": "No bearer token was sent.",
        "malformed": "The value is not a compact JWS with a JSON header and claims.",
        "unsupported_algorithm": "The header's alg is not ES256 (alg none and HMAC are always refused).",
        "wrong_type": "The header's typ is not at+jwt: this is not an access token.",
        "unknown_key": "The header's kid is not in the issuer's JWKS.",
        "bad_signature": "The signature does not verify with the issuer's key.",
        "wrong_issuer": "iss is not the expected issuer.",
        "wrong_audience": "aud is not (or does not contain) the expected audience.",
        "missing_claim": "A required claim (iss, aud, exp, sub, client_id, jti) is missing or of the wrong type.",
        "expired": "exp is past (beyond the leeway).",
        "not_yet_valid": "nbf or iat is in the future (beyond the leeway).",
        "inactive": "Introspection says the token is no longer active: revoked, or its app disabled.",
        "unavailable": "The issuer's keys or introspection endpoint could not be reached; the token was not judged.",
    }
)

_DESCRIPTIONS = {
    "missing": "A bearer token is required.",
    "malformed": "The access token is malformed.",
    "unsupported_algorithm": "The access token is not signed with ES256.",
    "wrong_type": "The token is not an access token (typ at+jwt).",
    "unknown_key": "The access token is signed with an unknown key.",
    "bad_signature": "The access token's signature is invalid.",
    "wrong_issuer": "The access token was issued by another issuer.",
    "wrong_audience": "The access token is meant for another audience.",
    "missing_claim": "The access token lacks a required claim.",
    "expired": "The access token expired.",
    "not_yet_valid": "The access token is not valid yet.",
    "inactive": "The access token was revoked.",
    "unavailable": "The token could not be checked right now; try again.",
}


class InvalidTokenError(Exception):
    """The one exception the verifier raises: the token may not be trusted.

    ``reason`` is one of :data:`REASONS` (a short machine-readable code) and ``description``
    a sentence safe to return to the caller. ``reason == "unavailable"`` means the token was
    not judged at all (the issuer could not be reached): answer 503, not 401.
    """

    def __init__(self, reason: str, description: str | None = None) -> None:
        self.reason = reason
        self.description = description or _DESCRIPTIONS.get(reason, "The access token is invalid.")
        super().__init__(f"{reason}: {self.description}")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token.

    ``user_id`` is None for an app's own token (the client_credentials grant), in which
    case ``subject`` is the app. ``permissions`` come from the ``permissions`` claim
    (the ``scope`` claim split on spaces when absent).
    """

    subject: str
    app_id: str
    user_id: str | None
    permissions: tuple[str, ...]
    scope: str
    expires_at: datetime
    jti: str
    issued_at: datetime | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def has(self, *permissions: str) -> bool:
        """True when the token carries every one of ``permissions``."""
        return all(p in self.permissions for p in permissions)

    def missing(self, permissions: Iterable[str]) -> tuple[str, ...]:
        """Those of ``permissions`` the token does not carry, in the order given."""
        return tuple(p for p in permissions if p not in self.permissions)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _jwks_keys(document: Any) -> dict[str, Any]:
    """The usable ES256 public keys of a JWKS, by kid; other keys are ignored."""
    keys: dict[str, Any] = {}
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS has no keys list")
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
        except jwt.PyJWTError:
            continue
    return keys


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TokenVerifier:
    """Verifies grantd's access tokens. Thread-safe; share one per process.

    :param issuer: grantd's ``GRANTD_ISSUER``; tokens must carry it as ``iss``.
    :param audience: the expected ``aud``; by default the issuer (grantd's default audience,
        ``GRANTD_ACCESS_TOKEN_AUDIENCE``).
    :param leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    :param discovery_url: where the RFC 8414 metadata is; by default
        ``<issuer>/.well-known/oauth-authorization-server``. Useful when the issuer's public URL
        is not reachable from the resource server.
    :param jwks_uri: skip discovery and read the keys here.
    :param introspection: ``(client_id, client_secret)`` of a grantd app key: turns on online mode.
        grantd answers introspection only for tokens issued to that same app.
    :param introspection_endpoint: skip discovery for the introspection endpoint.
    :param introspection_cache_ttl: seconds an ``active`` answer is reused; 0 asks every time.
    :param jwks_max_age: seconds after which the JWKS is read again (grantd serves it with max-age=300).
    :param min_refetch_interval: least seconds between two re-reads caused by an unknown ``kid``.
    :param timeout: seconds for each HTTP request to the issuer.
    :param cache_size: how many verified tokens are remembered, so that one presented again skips
        the signature check (every other check still runs); 0 turns this off.
    :param clock: returns the current Unix time; for tests.
    """

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        *,
        leeway: float = 30,
        discovery_url: str | None = None,
        jwks_uri: str | None = None,
        introspection: tuple[str, str] | None = None,
        introspection_endpoint: str | None = None,
        introspection_cache_ttl: float = 5.0,
        jwks_max_age: float = 300.0,
        min_refetch_interval: float = 60.0,
        timeout: float = 5.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway < 0 or introspection_cache_ttl < 0 or jwks_max_age <= 0 or min_refetch_interval < 0:
            raise ValueError("leeway, cache times and intervals must not be negative")
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self.issuer = issuer.rstrip("/")
        self.audience = audience or self.issuer
        self.leeway = leeway
        self.discovery_url = discovery_url or f"{self.issuer}/.well-known/oauth-authorization-server"
        self.introspection = introspection
        self.introspection_cache_ttl = introspection_cache_ttl
        self.jwks_max_age = jwks_max_age
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self.cache_size = cache_size
        self.clock = clock
        self._jwks_uri = jwks_uri
        self._introspection_endpoint = introspection_endpoint
        self._lock = threading.Lock()  # guards the fields below; never held across I/O
        self._fetch_lock = threading.Lock()  # one synchronous fetch at a time
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # time.monotonic() of the last successful JWKS read
        self._retry_at = 0.0  # after a failed read, no new attempt before this
        self._last_miss_fetch = -math.inf
        self._generation = 0  # counts finished fetch attempts; lets waiters skip a duplicate fetch
        self._async_fetch: asyncio.Task[None] | None = None
        self._introspected: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        # token → (kid, the key object its signature verified with), oldest first; key objects are
        # new after every JWKS read, so a token's signature is checked again after one.
        self._signed: dict[str, tuple[str, Any]] = {}
        self._http: Any = None
        self._ahttp: tuple[asyncio.AbstractEventLoop, Any] | None = None

    # ------------------------------------------------------------------ public

    def verify(self, token: str) -> AccessToken:
        """Verify ``token`` (the bare JWT, without ``Bearer``); raise InvalidTokenError if it may not be trusted.

        Blocks on the network only for the first JWKS read, re-reads, and online introspection.
        """
        access = self._verified_before(token)
        if access is None:
            kid = self._check_header(token)
            key = self._cached_key(kid)
            if key is None:
                generation = self._plan_fetch(kid)
                with self._fetch_lock:  # also waits for a read another thread started, which may bring the kid
                    if generation is not None and self._generation == generation:
                        self._fetch_keys()
                key = self._key_after_fetch(kid)
            access = self._check_signed(token, kid, key)
        if self.introspection is not None:
            active = self._cached_introspection(token)
            if active is None:
                active = self._introspect(token, access)
            if not active:
                raise InvalidTokenError("inactive")
        return access

    async def averify(self, token: str) -> AccessToken:
        """:meth:`verify` for asyncio code: network calls do not block the event loop."""
        access = self._verified_before(token)
        if access is None:
            kid = self._check_header(token)
            key = self._cached_key(kid)
            if key is None:
                generation = self._plan_fetch(kid)
                if generation is not None:
                    await self._afetch_once(generation)
                else:
                    await self._await_running_fetch()  # a read another request started may bring the kid
                key = self._key_after_fetch(kid)
            access = self._check_signed(token, kid, key)
        if self.introspection is not None:
            active = self._cached_introspection(token)
            if active is None:
                active = await self._aintrospect(token, access)
            if not active:
                raise InvalidTokenError("inactive")
        return access

    def refresh_keys(self) -> None:
        """Read the JWKS now (for example at start-up, to fail early); raises InvalidTokenError("unavailable")."""
        with self._fetch_lock:
            self._fetch_keys()
        with self._lock:
            if self._fetched_at is None:
                raise InvalidTokenError("unavailable")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        self.close()
        if self._ahttp is not None:
            loop, client = self._ahttp
            self._ahttp = None
            if loop is asyncio.get_running_loop():
                await client.aclose()

    def __enter__(self) -> "TokenVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "TokenVerifier":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ offline checks

    @staticmethod
    def _check_header(token: str) -> str:
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise InvalidTokenError("malformed")
        # Read only to pick the key; PyJWT reads the header again, strictly, when it checks the
        # signature, and refuses one that is not valid base64url JSON.
        try:
            header = json.loads(_b64decode(token[: token.index(".")]))
        except (ValueError, RecursionError):  # not base64, not UTF-8, not JSON; JSON nested too deep
            raise InvalidTokenError("malformed") from None
        if not isinstance(header, dict):
            raise InvalidTokenError("malformed")
        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError("unsupported_algorithm")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
            raise InvalidTokenError("wrong_type")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("unknown_key")
        return kid

    def _check_signed(self, token: str, kid: str, key: Any) -> AccessToken:
        """The JWS checked by PyJWT (signature included), then its claims; remembered once accepted."""
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            raise InvalidTokenError("bad_signature") from None
        except jwt.PyJWTError:
            raise InvalidTokenError("malformed") from None
        access = self._accept(claims)
        if self.cache_size:
            with self._lock:
                if len(self._signed) >= self.cache_size:
                    del self._signed[next(iter(self._signed))]
                self._signed[token] = (kid, key)
        return access

    def _verified_before(self, token: str) -> AccessToken | None:
        """The token's claims checked again, when this very text was verified before with a key the
        JWKS still holds (and is fresh); None otherwise."""
        seen = self._signed.get(token) if isinstance(token, str) else None
        if seen is None or self._cached_key(seen[0]) is not seen[1]:
            return None
        # The same bytes PyJWT decoded into a JSON object when the token was first verified.
        return self._accept(json.loads(_b64decode(token.split(".")[1])))

    def _accept(self, claims: dict[str, Any]) -> AccessToken:
        """Check a signed token's claims: iss, aud, times against our clock, the claims grantd always sets."""
        iss, aud = claims.get("iss"), claims.get("aud")
        if iss is None or aud is None:
            raise InvalidTokenError("missing_claim")
        if iss != self.issuer:
            raise InvalidTokenError("wrong_issuer")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise InvalidTokenError("wrong_audience")

        now = self.clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _number(exp) or (nbf is not None and not _number(nbf)) or (iat is not None and not _number(iat)):
            raise InvalidTokenError("missing_claim")
        if now > exp + self.leeway:
            raise InvalidTokenError("expired")
        if (nbf is not None and now < nbf - self.leeway) or (iat is not None and now < iat - self.leeway):
            raise InvalidTokenError("not_yet_valid")

        sub, client_id, jti = claims.get("sub"), claims.get("client_id"), claims.get("jti")
        user_id = claims.get("user_id")
        scope = claims.get("scope", "")
        if not all(isinstance(v, str) and v for v in (sub, client_id, jti)) or not isinstance(scope, str):
            raise InvalidTokenError("missing_claim")
        if user_id is not None and not isinstance(user_id, str):
            raise InvalidTokenError("missing_claim")
        permissions = claims.get("permissions")
        if permissions is None:
            permissions = scope.split()
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise InvalidTokenError("missing_claim")
        return AccessToken(
            subject=sub,
            app_id=client_id,
            user_id=user_id,
            permissions=tuple(permissions),
            scope=scope,
            expires_at=datetime.fromtimestamp(exp, UTC),
            jti=jti,
            issued_at=datetime.fromtimestamp(iat, UTC) if iat is not None else None,
            claims=MappingProxyType(claims),
        )

    # ------------------------------------------------------------------ keys

    def _stale(self, now: float) -> bool:
        """Whether the JWKS is due to be read again (never read, or older than jwks_max_age); call under _lock."""
        if now < self._retry_at:
            return False
        return self._fetched_at is None or now - self._fetched_at >= self.jwks_max_age

    def _cached_key(self, kid: str) -> Any:
        """The key for kid when the cache is fresh; None when a fetch should be considered."""
        with self._lock:
            return None if self._stale(time.monotonic()) else self._keys.get(kid)

    def _plan_fetch(self, kid: str) -> int | None:
        """Decide whether to read the JWKS for this kid: returns the generation to fetch after, or None."""
        now = time.monotonic()
        with self._lock:
            if now < self._retry_at:
                return None
            if self._stale(now):
                return self._generation
            if kid not in self._keys and now - self._last_miss_fetch >= self.min_refetch_interval:
                self._last_miss_fetch = now
                return self._generation
            return None

    def _key_after_fetch(self, kid: str) -> Any:
        with self._lock:
            key = self._keys.get(kid)
            never_read = self._fetched_at is None
        if key is not None:
            return key
        raise InvalidTokenError("unavailable" if never_read else "unknown_key")

    def _fetch_keys(self) -> None:
        """Read discovery (once) and the JWKS; on failure keep the keys we have and back off."""
        try:
            if self._jwks_uri is None or (self.introspection is not None and self._introspection_endpoint is None):
                self._use_metadata(self._get_json(self.discovery_url))
            self._store_keys(self._get_json(self._jwks_uri))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving with what we have
            self._fetch_failed(exc)

    async def _afetch_keys(self) -> None:
        try:
            if self._jwks_uri is None or (self.introspection is not None and self._introspection_endpoint is None):
                self._use_metadata(await self._aget_json(self.discovery_url))
            self._store_keys(await self._aget_json(self._jwks_uri))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            self._fetch_failed(exc)

    async def _afetch_once(self, generation: int) -> None:
        """Join the fetch already under way on this loop, or start one unless another finished meanwhile."""
        loop = asyncio.get_running_loop()
        task = self._async_fetch
        if task is None or task.done() or task.get_loop() is not loop:
            with self._lock:
                if self._generation != generation:
                    return
            task = loop.create_task(self._afetch_keys())
            self._async_fetch = task
        await asyncio.shield(task)

    async def _await_running_fetch(self) -> None:
        task = self._async_fetch
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(task)

    def _use_metadata(self, metadata: Any) -> None:
        if not isinstance(metadata, dict) or metadata.get("issuer", "").rstrip("/") != self.issuer:
            raise ValueError(f"the discovery document at {self.discovery_url} is not for issuer {self.issuer}")
        if self._jwks_uri is None:
            self._jwks_uri = metadata["jwks_uri"]
        if self._introspection_endpoint is None and self.introspection is not None:
            self._introspection_endpoint = metadata["introspection_endpoint"]

    def _store_keys(self, document: Any) -> None:
        keys = _jwks_keys(document)
        with self._lock:
            self._keys = keys
            self._fetched_at = time.monotonic()
            self._retry_at = 0.0
            self._generation += 1

    def _fetch_failed(self, exc: Exception) -> None:
        log.warning("reading the keys of %s failed: %s: %s", self.issuer, exc.__class__.__name__, exc)
        with self._lock:
            # Keep verifying with the keys we have; read again once the back-off has passed.
            self._retry_at = time.monotonic() + min(10.0, max(1.0, self.min_refetch_interval))
            self._generation += 1

    # ------------------------------------------------------------------ online mode

    def _cached_introspection(self, token: str) -> bool | None:
        now = time.monotonic()
        key = _token_hash(token)
        with self._lock:
            entry = self._introspected.get(key)
            if entry is None:
                return None
            until, active = entry
            if now >= until:
                del self._introspected[key]
                return None
            return active

    def _remember_introspection(self, token: str, access: AccessToken, active: bool) -> None:
        left = access.expires_at.timestamp() + self.leeway - self.clock()
        ttl = min(self.introspection_cache_ttl, left) if active else left
        if ttl <= 0:
            return
        with self._lock:
            self._introspected[_token_hash(token)] = (time.monotonic() + ttl, active)
            while len(self._introspected) > 10_000:
                self._introspected.popitem(last=False)

    def _introspection_request(self) -> tuple[str, dict[str, str]]:
        endpoint = self._introspection_endpoint
        if endpoint is None:
            raise InvalidTokenError("unavailable")
        return endpoint, {"token_type_hint": "access_token"}

    def _introspection_answer(self, token: str, access: AccessToken, status: int, body: Any) -> bool:
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            log.warning("introspection at %s answered %s", self._introspection_endpoint, status)
            raise InvalidTokenError("unavailable")
        active = body["active"] and body.get("jti", access.jti) == access.jti
        self._remember_introspection(token, access, active)
        return active

    def _introspect(self, token: str, access: AccessToken) -> bool:
        if self._introspection_endpoint is None:
            with self._fetch_lock:
                self._fetch_keys()
        endpoint, form = self._introspection_request()
        try:
            response = self._client().post(endpoint, data={"token": token, **form}, auth=self.introspection)
            body = response.json() if response.status_code == 200 else None
        except Exception as exc:  # noqa: BLE001 - network or JSON failure: the token is not judged
            log.warning("introspection at %s failed: %s", endpoint, exc.__class__.__name__)
            raise InvalidTokenError("unavailable") from None
        return self._introspection_answer(token, access, response.status_code, body)

    async def _aintrospect(self, token: str, access: AccessToken) -> bool:
        if self._introspection_endpoint is None:
            with self._lock:
                generation = self._generation
            await self._afetch_once(generation)
        endpoint, form = self._introspection_request()
        try:
            response = await self._aclient().post(endpoint, data={"token": token, **form}, auth=self.introspection)
            body = response.json() if response.status_code == 200 else None
        except Exception as exc:  # noqa: BLE001
            log.warning("introspection at %s failed: %s", endpoint, exc.__class__.__name__)
            raise InvalidTokenError("unavailable") from None
        return self._introspection_answer(token, access, response.status_code, body)

    # ------------------------------------------------------------------ HTTP

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return self._http

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._ahttp is None or self._ahttp[0] is not loop:
            import httpx

            self._ahttp = (loop, httpx.AsyncClient(timeout=self.timeout, follow_redirects=False))
        return self._ahttp[1]

    def _get_json(self, url: str) -> Any:
        response = self._client().get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()

    async def _aget_json(self, url: str) -> Any:
        response = await self._aclient().get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
