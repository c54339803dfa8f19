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

``resource=`` names the resource server itself (RFC 8707; RFC 9728's ``resource``): ``aud`` must then
contain exactly that URI, so a token meant for another API is refused here.

A token carrying ``cnf.jkt`` is DPoP-bound (RFC 9449 §6.1) and is not a bearer token: ``verify``
refuses it, and :meth:`TokenVerifier.verify_request` accepts it only as ``Authorization: DPoP`` with
one proof, for this request, by the key it is bound to (``grantd.sdk.dpop`` checks the proof; the
``jti`` of an accepted proof is remembered for its window, so that it is accepted once).

Online mode (``introspection=(client_id, client_secret)``) additionally asks the issuer's
introspection endpoint whether the token is still active, so a revocation is seen at once.
Answers are cached for ``introspection_cache_ttl`` seconds (0: ask on every request);
an inactive answer is cached until the token expires, since it cannot become active again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt

from grantd.sdk import dpop as _dpop
from grantd.sdk.errors import REASONS, InvalidTokenError

__all__ = ["ALGORITHM", "REASONS", "AccessToken", "InvalidTokenError", "TokenVerifier"]

log = logging.getLogger("grantd.sdk")

ALGORITHM = "ES256"
# PyJWT checks the JWS (alg, signature, a JSON object of claims); TokenVerifier._accept checks the
# claims themselves, the same way for a token seen before, whose signature is not checked again.
_DECODE_OPTIONS: dict[str, Any] = {
    "verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False, "verify_iss": False,
}
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token.

    ``user_id`` is None for an app's own token (the client_credentials grant), in which
    case ``subject`` is the app. ``permissions`` come from the ``permissions`` claim
    (the ``scope`` claim split on spaces when absent). ``jkt`` is the thumbprint of the key a
    DPoP-bound token is bound to (its ``cnf.jkt``, RFC 9449 §6.1), None for a bearer token.
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
    jkt: str | None = None

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
    :param audience: the expected ``aud``; by default the resource when one is given, else the issuer
        (grantd's default audience, ``GRANTD_ACCESS_TOKEN_AUDIENCE``).
    :param resource: this resource server's URI (RFC 8707, RFC 9728 ``resource``), for example
        ``https://mcp.example.com/mcp``: ``aud`` (a string or a list) must contain it exactly. The
        Starlette/FastAPI integration (``grantd.sdk.asgi``) then serves its protected-resource
        metadata and names that document in every 401 (``resource_metadata``).
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
    :param dpop_algorithms: the algorithms a DPoP proof may be signed with (asymmetric only).
    :param dpop_proof_lifetime: seconds a DPoP proof is accepted after its ``iat`` (plus ``leeway``
        of clock skew either way); its ``jti`` is remembered that long.
    :param dpop_required: refuse bearer tokens: every request must present a DPoP-bound token with
        its proof (``dpop_bound_access_tokens_required`` in the resource's metadata).
    :param dpop_nonce: require a nonce in DPoP proofs (RFC 9449 §9): True for nonces made and checked
        by this process, or a :class:`~grantd.sdk.dpop.DPoPNonces` whose secret several processes share.
        A proof without a valid one is refused with ``use_dpop_nonce`` and a fresh nonce to send back
        in ``DPoP-Nonce``.
    :param dpop_replay_store: where proof ``jti`` values are remembered: by default a
        :class:`~grantd.sdk.dpop.ReplayCache` of this process (``dpop_replay_cache_size`` entries);
        a resource server of several processes passes a store they share (see
        :data:`~grantd.sdk.dpop.ReplayStore`).
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
        resource: str | None = None,
        dpop_algorithms: Iterable[str] = _dpop.DEFAULT_ALGORITHMS,
        dpop_proof_lifetime: float = 60.0,
        dpop_required: bool = False,
        dpop_nonce: "bool | _dpop.DPoPNonces" = False,
        dpop_replay_store: _dpop.ReplayStore | None = None,
        dpop_replay_cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway < 0 or introspection_cache_ttl < 0 or jwks_max_age <= 0 or min_refetch_interval < 0:
            raise ValueError("leeway, cache times and intervals must not be negative")
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        if resource is not None:
            parts = urlsplit(resource)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or "#" in resource:
                raise ValueError("resource must be an absolute http(s) URI without a fragment (RFC 8707 §2)")
            if audience is not None and audience != resource:
                raise ValueError("give resource or audience, not two different values: the resource is the audience")
        self.dpop_algorithms = tuple(dpop_algorithms)
        unknown = [alg for alg in self.dpop_algorithms if alg not in _dpop._KEY_TYPES]
        if unknown or not self.dpop_algorithms:
            raise ValueError(f"DPoP proofs take asymmetric algorithms only, of {' '.join(_dpop.DEFAULT_ALGORITHMS)}")
        if dpop_proof_lifetime <= 0:
            raise ValueError("dpop_proof_lifetime must be positive")
        self.issuer = issuer.rstrip("/")
        self.resource = resource
        self.audience = audience or resource or self.issuer
        self.dpop_proof_lifetime = dpop_proof_lifetime
        self.dpop_required = dpop_required
        self.dpop_nonces: _dpop.DPoPNonces | None = (
            _dpop.DPoPNonces(clock=clock) if dpop_nonce is True else dpop_nonce or None
        )
        self.dpop_replay_store: _dpop.ReplayStore = dpop_replay_store or _dpop.ReplayCache(
            dpop_replay_cache_size, clock=clock
        )
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
        """Verify ``token`` (the bare JWT, without ``Bearer``) as a bearer token; raise InvalidTokenError
        if it may not be trusted. A DPoP-bound token is refused (``dpop_bound``): it is trusted only
        with its proof, by :meth:`verify_request`.

        Blocks on the network only for the first JWKS read, re-reads, and online introspection.
        """
        return self._as_bearer(self._verify_token(token))

    async def averify(self, token: str) -> AccessToken:
        """:meth:`verify` for asyncio code: network calls do not block the event loop."""
        return self._as_bearer(await self._averify_token(token))

    def verify_request(
        self, method: str, url: str, authorization: str | None, dpop: str | Sequence[str] | None = None
    ) -> AccessToken:
        """Verify the access token of an HTTP request, bearer or DPoP-bound (RFC 6750, RFC 9449 §7).

        ``method`` and ``url`` are the request's (the URL as the client addressed it: scheme, host,
        port, path; any query is ignored), ``authorization`` its ``Authorization`` header, ``dpop``
        its ``DPoP`` header or every ``DPoP`` header it carries (more than one is refused).

        ``Authorization: Bearer <token>``: the token must not be DPoP-bound (and bearer tokens must be
        accepted: not ``dpop_required``). ``Authorization: DPoP <token>``: the token must be bound
        (``cnf.jkt``) and come with one valid proof for this request, signed by the key it is bound to.
        Raises InvalidTokenError whose ``error`` and ``scheme`` say how to answer.
        """
        scheme, token, proofs = self._credentials(authorization, dpop)
        try:
            access = self._verify_token(token)
            if scheme == "Bearer":
                return self._as_bearer(access)
            proof = self._check_dpop(access, token, method, url, proofs)
            first = self.dpop_replay_store(*self._replay_entry(proof))
            if not isinstance(first, bool):
                getattr(first, "close", lambda: None)()  # a coroutine that will not be awaited
                raise TypeError("verify_request needs a dpop_replay_store that answers at once; use averify_request")
            return self._unreplayed(access, first)
        except InvalidTokenError as exc:
            raise self._for_scheme(exc, scheme) from None

    async def averify_request(
        self, method: str, url: str, authorization: str | None, dpop: str | Sequence[str] | None = None
    ) -> AccessToken:
        """:meth:`verify_request` for asyncio code; the replay store may answer with an awaitable."""
        scheme, token, proofs = self._credentials(authorization, dpop)
        try:
            access = await self._averify_token(token)
            if scheme == "Bearer":
                return self._as_bearer(access)
            proof = self._check_dpop(access, token, method, url, proofs)
            first = self.dpop_replay_store(*self._replay_entry(proof))
            if not isinstance(first, bool):
                first = await first
            return self._unreplayed(access, first)
        except InvalidTokenError as exc:
            raise self._for_scheme(exc, scheme) from None

    def _verify_token(self, token: str) -> AccessToken:
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

    async def _averify_token(self, token: str) -> AccessToken:
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

    # ------------------------------------------------------------------ the request: bearer or DPoP

    def _credentials(self, authorization: str | None, dpop: str | Sequence[str] | None) -> tuple[str, str, list[str]]:
        """The scheme (``Bearer`` or ``DPoP``), the token and the DPoP proofs of a request."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        scheme = {"bearer": "Bearer", "dpop": "DPoP"}.get(scheme.lower(), "")
        if not scheme or not token:
            how = "DPoP <token> with a DPoP proof" if self.dpop_required else "Bearer <token> or DPoP <token>"
            raise self._with_nonce(InvalidTokenError("missing", f"Send the access token as Authorization: {how}."))
        if " " in token:
            raise self._with_nonce(InvalidTokenError("malformed", f"Send the access token as Authorization: {scheme} <token>.", scheme=scheme))
        proofs = [dpop] if isinstance(dpop, str) else list(dpop or ())
        return scheme, token, proofs

    def _as_bearer(self, access: AccessToken) -> AccessToken:
        if access.jkt is not None:
            raise InvalidTokenError("dpop_bound")
        if self.dpop_required:
            raise InvalidTokenError("bearer_refused")
        return access

    def _check_dpop(self, access: AccessToken, token: str, method: str, url: str, proofs: list[str]) -> _dpop.Proof:
        """RFC 9449 §7.1: a bound token, one proof for this request, by the key the token is bound to, with a nonce when required."""
        if access.jkt is None:
            raise InvalidTokenError("not_dpop_bound")
        if not proofs:
            raise InvalidTokenError("invalid_dpop_proof", "A DPoP proof is required with a DPoP-bound token.")
        if len(proofs) > 1:
            raise InvalidTokenError("invalid_dpop_proof", "Send exactly one DPoP header.")
        proof = _dpop.check_proof(
            proofs[0], method=method, url=url, access_token=token, algorithms=self.dpop_algorithms,
            now=self.clock(), lifetime=self.dpop_proof_lifetime, leeway=self.leeway,
        )
        if not hmac.compare_digest(proof.jkt.encode(), access.jkt.encode()):
            raise InvalidTokenError("dpop_key_mismatch")
        if self.dpop_nonces is not None and not self.dpop_nonces.valid(proof.nonce):
            raise InvalidTokenError("use_dpop_nonce")
        return proof

    def _replay_entry(self, proof: _dpop.Proof) -> tuple[str, float]:
        """The replay store's key for a proof (its key and jti, hashed) and until when to keep it."""
        key = _dpop.b64url(hashlib.sha256(f"{proof.jkt}:{proof.jti}".encode()).digest())
        return key, proof.iat + self.dpop_proof_lifetime + self.leeway

    @staticmethod
    def _unreplayed(access: AccessToken, first: bool) -> AccessToken:
        if not first:
            raise InvalidTokenError("dpop_replayed")
        return access

    def _with_nonce(self, exc: InvalidTokenError) -> InvalidTokenError:
        if self.dpop_nonces is not None and exc.reason != "unavailable" and exc.dpop_nonce is None:
            exc.dpop_nonce = self.dpop_nonces.new()
        return exc

    def _for_scheme(self, exc: InvalidTokenError, scheme: str) -> InvalidTokenError:
        if exc.scheme is None:
            exc.scheme = scheme
        return self._with_nonce(exc)

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
        jkt = None
        if "cnf" in claims:  # RFC 7800 confirmation; RFC 9449 §6.1: the DPoP key's thumbprint
            cnf = claims["cnf"]
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if not (isinstance(jkt, str) and jkt):  # a binding this verifier cannot check is not ignored
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
            jkt=jkt,
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
