"""DPoP (RFC 9449): sender-constrained tokens, every rule of them.

A client proves it holds a key by sending, with each request, a *proof*: a JWT it signs with that
key, carrying the public key in its header (``jwk``), the request's method and URI (``htm``,
``htu``), when it was made (``iat``), a unique ``jti`` and, at a resource, the hash of the access
token it presents (``ath``). grantd binds what it issues to the key's JWK SHA-256 thumbprint (RFC
7638, the ``jkt``):

- the access token carries ``cnf: {"jkt": …}`` (§6.1) and its row the ``jkt``; the token response
  says ``token_type: DPoP``; introspection answers ``cnf`` and ``token_type: DPoP`` (§6.2);
- a public client's refresh token is bound to the key too; a confidential client's is not (it is
  already bound to the client's authentication, §5) — a refresh of a bound one needs a proof by
  the same key;
- an authorization code is bound by the request's ``dpop_jkt`` (§10), or by the proof sent to
  ``/oauth2/par`` (§10.1); redeeming it needs a proof by that key;
- UserInfo takes ``Authorization: DPoP <token>`` with a proof carrying ``ath`` and refuses a bound
  token sent as a bearer token (§7).

``check`` is the one judge of a proof (§4.3); ``Bound`` carries the proven key into the client
authentication, so that every grant binds what it issues without knowing of DPoP
(``core.access_token.row``). Only requests that send a ``DPoP`` header pay for any of it.

Replays (§11.1): each accepted proof is recorded until its ``iat`` could no longer pass, in Redis
(``SET NX EX``) when ``GRANTD_REDIS_URL`` is set, else in the database (``store.dpop``; pruned as
other expired rows are): every process of a deployment refuses a proof used before. Through a Redis
outage the database stands in (``RedisReplays``).

Nonces (§8, §9), with ``GRANTD_DPOP_NONCE``: a nonce is a keyed hash of the current time window
(``NONCE_WINDOW`` seconds) under the master secret, so every process makes and accepts the same
ones with no store; the current and the previous window's are accepted, and every answer to a
DPoP request sends the current one in ``DPoP-Nonce``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import jwt

from grantd.core.clients import Client
from grantd.core.context import Context
from grantd.core.errors import InvalidDPoPProof, InvalidGrant, InvalidRequest, UseDPoPNonce
from grantd.core.redis_breaker import RedisBreaker
from grantd.store import dpop as store

TYP = "dpop+jwt"
SCHEME = "DPoP"  # the token_type and the Authorization scheme (§5, §7.1)
# The proof algorithms accepted (RFC 7518 names): asymmetric only, never none, never HMAC.
ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
_KEY_TYPES = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519"), "RS256": ("RSA", None), "PS256": ("RSA", None)}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
# RFC 7638 §3.2: the members of a thumbprint, per key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
# A proof's iat may be at most MAX_AGE seconds old, and at most LEEWAY seconds ahead (clock skew).
MAX_AGE = 300
LEEWAY = 60
MAX_PROOF_BYTES = 8192
NONCE_WINDOW = 300
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest, unpadded


class Proof(NamedTuple):
    """A proof that passed every check: the thumbprint of its key, and its claims."""

    jkt: str
    claims: dict[str, Any]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict[str, Any]) -> str:
    """The JWK SHA-256 thumbprint (RFC 7638) of a public key: its required members, sorted, as
    compact JSON, hashed."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    return _b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


def access_token_hash(token: str) -> str:
    """``ath`` (§4.2): the base64url SHA-256 of the access token's ASCII text."""
    return _b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def check_jkt(value: str | None) -> str | None:
    """The ``dpop_jkt`` authorization request parameter (§10): a JWK SHA-256 thumbprint, or None."""
    if value is not None and not _JKT.fullmatch(value):
        raise InvalidRequest("dpop_jkt must be a JWK SHA-256 thumbprint (RFC 7638): 43 base64url characters.")
    return value


def one_proof(values: list[str]) -> str | None:
    """The request's one ``DPoP`` header (§4.3 item 1), or None when it sends none."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidDPoPProof("Send one DPoP header, not several.")
    return values[0]


def _normalized(uri: str) -> tuple[str, str, int | None, str] | None:
    """A URI as §4.3 item 9 compares it: scheme and host in lower case, the default port left out,
    an empty path as /, without query and fragment (RFC 3986 §6.2.2, §6.2.3)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    return scheme, host, port, parts.path or "/"


def nonce(ctx: Context, now: int | None = None) -> str:
    """The server's current DPoP nonce: a keyed hash of the time window (the same in every process)."""
    return _nonce_of(ctx, (ctx.now() if now is None else now) // NONCE_WINDOW)


def _nonce_of(ctx: Context, window: int) -> str:
    return ctx.hasher.hash(f"dpop nonce {window}")[:32]


def nonce_headers(ctx: Context) -> dict[str, str]:
    """What an answer to a DPoP request sends, with nonces on: the current nonce (§8.2: rotating)."""
    return {"DPoP-Nonce": nonce(ctx)} if ctx.settings.dpop_nonce else {}


def _refuse(message: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(f"The DPoP proof is invalid: {message}")


async def check(ctx: Context, proof: str, *, method: str, uri: str, access_token: str | None = None) -> Proof:
    """Judge ``proof`` (a ``DPoP`` header) for a request of ``method`` to ``uri`` (§4.3), presenting
    ``access_token`` at a resource (its ``ath``); record it so that it is never accepted again
    (§11.1). InvalidDPoPProof, or UseDPoPNonce when the server's nonce is required and missing or old."""
    if len(proof) > MAX_PROOF_BYTES or proof.count(".") != 2:
        raise _refuse("not a JWT.")
    try:
        header = jwt.get_unverified_header(proof)
    except (jwt.PyJWTError, ValueError):
        raise _refuse("not a JWT.") from None
    if header.get("typ") != TYP:
        raise _refuse(f"typ must be {TYP}.")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _refuse(f"alg must be one of: {', '.join(ALGORITHMS)}.")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or not all(isinstance(name, str) for name in jwk):
        raise _refuse("the header must carry the public key as jwk.")
    if any(name in jwk for name in _PRIVATE_MEMBERS):
        raise _refuse("jwk must be a public key: it holds a private member.")
    kty, crv = _KEY_TYPES[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise _refuse(f"{alg} needs a {kty} key{f' on {crv}' if crv else ''}.")
    try:
        key = jwt.PyJWK(jwk, alg).key
        jkt = thumbprint(jwk)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise _refuse("jwk is not a valid public key.") from None
    try:
        claims = jwt.decode(
            proof, key, algorithms=[alg],
            options={"require": ["jti", "htm", "htu", "iat"], "verify_aud": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise _refuse("its signature does not verify with its jwk.") from None
    except jwt.PyJWTError as exc:
        raise _refuse(f"{exc}.") from None
    jti, htm, htu, iat = claims["jti"], claims["htm"], claims["htu"], claims["iat"]
    if not isinstance(jti, str) or not 0 < len(jti) <= 255:
        raise _refuse("jti must be a string of 1 to 255 characters.")
    if htm != method:
        raise _refuse(f"htm must be the request's method, {method}.")
    if not isinstance(htu, str) or _normalized(htu) is None or _normalized(htu) != _normalized(uri):
        raise _refuse(f"htu must be the request's URI, {uri}.")
    now = ctx.now()
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or not now - MAX_AGE <= iat <= now + LEEWAY:
        raise _refuse(f"iat must be the time the proof was made (at most {MAX_AGE} seconds ago).")
    if ctx.settings.dpop_nonce:
        sent = claims.get("nonce")
        window = now // NONCE_WINDOW
        if not isinstance(sent, str) or sent not in (_nonce_of(ctx, window), _nonce_of(ctx, window - 1)):
            raise UseDPoPNonce("The DPoP proof must carry the server's current nonce (DPoP-Nonce).", nonce=nonce(ctx, now))
    if access_token is not None and claims.get("ath") != access_token_hash(access_token):
        raise _refuse("ath must be the hash of the access token presented.")
    if not await _first_use(ctx, ctx.hasher.hash(f"dpop proof {jkt} {jti}"), int(iat) + MAX_AGE + LEEWAY, now):
        raise _refuse("it was used already (its jti is not new).")
    return Proof(jkt, claims)


# ---------------------------------------------------------------- the replay store


class RedisReplays:
    """``SET NX EX`` of each proof in Redis (``GRANTD_REDIS_URL``), behind the circuit breaker every
    use of Redis shares (``core.redis_breaker``: ``GRANTD_REDIS_TIMEOUT``, no retries, one warning
    per outage). While the breaker is open, the database records each proof instead, so a replay
    is still refused.

    Across the end of an outage: a proof first used during it is in the database only, and could
    still pass until its ``expires_at``. So, as long as any proof this process recorded in the
    database could still pass (``_database_until``), each proof is recorded in Redis *and* in the
    database, and refused if either knew it: a proof first used during the outage cannot be
    replayed through Redis afterwards.

    What remains (written down in docs/operations.md too):

    - a proof first used through Redis shortly before Redis failed is not in the database: it can
      be replayed once while the breaker is open (the database then records it) or, if Redis came
      back empty, once after the outage;
    - the window is each process's own: a process that never saw Redis fail records in Redis only,
      so there a proof first used during the outage at another process can be replayed once. In a
      real outage every process that serves DPoP requests sees it fail.
    """

    def __init__(self, url: str, prefix: str, *, timeout: float) -> None:
        self.breaker = RedisBreaker(url, "DPoP replays", "recording DPoP proofs in the database", timeout=timeout)
        self.prefix = prefix
        self._database_until = 0  # until then, a proof recorded in the database only could still pass

    async def first_use(self, ctx: Context, proof_hash: str, expires_at: int, now: int) -> bool:
        breaker = self.breaker
        if breaker.closed():
            try:
                new = await breaker.client.set(f"{self.prefix}dpop:{proof_hash}", 1, nx=True, ex=max(expires_at - now, 1))
            except breaker.errors as exc:
                breaker.failed(exc)
            else:
                breaker.answered()
                if not new:
                    return False
                if now >= self._database_until:
                    return True
                return await _record(ctx, proof_hash, expires_at, now)  # just after an outage: both
        if expires_at > self._database_until:
            self._database_until = expires_at
        return await _record(ctx, proof_hash, expires_at, now)

    async def close(self) -> None:
        await self.breaker.close()


async def _record(ctx: Context, proof_hash: str, expires_at: int, now: int) -> bool:
    async with ctx.db.write() as tx:
        return await store.record_proof(tx, proof_hash, expires_at, now)


async def _first_use(ctx: Context, proof_hash: str, expires_at: int, now: int) -> bool:
    if not ctx.settings.redis_url:
        return await _record(ctx, proof_hash, expires_at, now)
    if ctx.dpop_replays is None:
        settings = ctx.settings
        ctx.dpop_replays = RedisReplays(settings.redis_url, settings.redis_key_prefix, timeout=settings.redis_timeout)
    return await ctx.dpop_replays.first_use(ctx, proof_hash, expires_at, now)


# ---------------------------------------------------------------- binding


class Bound:
    """A client authentication (``core.client_auth``) whose request carried a valid proof: the
    ``Client`` it proves holds the proof's ``jkt``, which the tokens issued to it are bound to."""

    __slots__ = ("auth", "jkt")

    def __init__(self, auth: Any, jkt: str) -> None:
        self.auth, self.jkt = auth, jkt

    @property
    def method(self) -> str:
        return self.auth.method  # type: ignore[no-any-return]

    @property
    def key_id(self) -> str | None:
        return self.auth.key_id  # type: ignore[no-any-return]

    async def authenticate(self, ctx: Context) -> Client:
        return (await self.auth.authenticate(ctx))._replace(dpop_jkt=self.jkt)

    def proven(self, ctx: Context, key: Any) -> Client:
        return self.auth.proven(ctx, key)._replace(dpop_jkt=self.jkt)  # type: ignore[no-any-return]


def require_proof(client: Client) -> None:
    """§5.2: an app registered with ``dpop_bound_access_tokens`` (``OpenIDSettings.dpop_required``)
    gets no token without a proof."""
    if client.dpop_required and client.dpop_jkt is None:
        raise InvalidDPoPProof("A DPoP proof is required: this app's access tokens are all DPoP-bound (RFC 9449).")


def check_binding(bound_jkt: str | None, client: Client, what: str) -> None:
    """A code or refresh token bound to a key (``bound_jkt``) is spent only with a proof by that key."""
    if bound_jkt is not None and bound_jkt != client.dpop_jkt:
        raise InvalidGrant(f"The {what} is bound to a DPoP key: send a DPoP proof signed with that key.")


def refresh_binding(client: Client) -> str | None:
    """The key a new refresh token is bound to (§5): a public client's proof key (a successor of a
    bound token keeps its predecessor's); a confidential client's refresh token is bound to its
    authentication instead."""
    return client.dpop_jkt if client.is_public else None
