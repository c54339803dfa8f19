"""DPoP at a resource server (RFC 9449): checking the proof that comes with a DPoP-bound token.

A DPoP-bound access token carries ``cnf: {"jkt": <thumbprint>}`` (RFC 9449 §6.1): the RFC 7638
SHA-256 thumbprint of a public key the client holds. The client sends it as
``Authorization: DPoP <token>`` together with one ``DPoP`` header: a proof JWT signed with that
key for this very request. :func:`check_proof` runs the checks of RFC 9449 §4.3 and §7.1 on it:

1. one compact JWS, ``typ`` ``dpop+jwt``;
2. ``alg`` one of the allowed asymmetric algorithms (never ``none`` nor an HMAC);
3. ``jwk`` a public key of that algorithm's type, with no private member; the signature verifies
   with it;
4. ``jti``, ``htm``, ``htu`` and ``iat`` present; ``htm`` is the request's method and ``htu`` its
   URI, both without query and fragment, compared after RFC 3986 §6.2.2–§6.2.3 normalisation;
5. ``iat`` within the window (``lifetime`` seconds back, ``leeway`` seconds of clock skew either way);
6. ``ath`` the base64url SHA-256 of the access token.

Then :class:`~grantd.sdk.TokenVerifier` compares the proof key's thumbprint with the token's
``cnf.jkt``, checks the nonce when it requires one (:class:`DPoPNonces`), and records the
proof's ``jti`` so that it is accepted once within its window (:class:`ReplayCache`, or any
:data:`ReplayStore`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt

from grantd.sdk.errors import InvalidTokenError

#: The proof algorithms accepted by default: asymmetric only (RFC 9449 §4.3 item 5).
DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")

# The key type (and curves) each asymmetric algorithm signs with.
_KEY_TYPES: dict[str, tuple[str, frozenset[str]]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    **{f"{family}{bits}": ("RSA", frozenset()) for family in ("RS", "PS") for bits in (256, 384, 512)},
}
# RFC 7517 §4 and RFC 7518 §6: the members only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2: the members a thumbprint is computed over, per key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
_MIN_RSA_BITS = 2048
MAX_PROOF_LENGTH = 8192
_DECODE_OPTIONS: dict[str, Any] = {
    "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
    "verify_aud": False, "verify_iss": False, "require": [],
}

#: A store of proof ``jti`` values shared by several processes of one resource server (for
#: example a Redis ``SET key 1 NX EXAT expires_at``): called with a key naming one proof and the
#: Unix time until which it must be remembered, it returns True the first time it sees that key
#: and False after. It may return an awaitable (used by ``averify_request``).
ReplayStore = Callable[[str, float], "bool | Awaitable[bool]"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def access_token_hash(access_token: str) -> str:
    """The ``ath`` of a proof for ``access_token``: base64url(SHA-256(its ASCII)), RFC 9449 §4.2."""
    return b64url(hashlib.sha256(access_token.encode("ascii", "surrogateescape")).digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url: what ``cnf.jkt`` holds.

    ValueError for a key type other than EC, RSA and OKP, or a required member missing."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise ValueError("not an EC, RSA or OKP public key with its required members")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode()).digest())


# ---------------------------------------------------------------- the target URI (htu)

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _percent_normalized(text: str) -> str:
    """RFC 3986 §6.2.2.1–§6.2.2.2: hex digits upper case, unreserved characters decoded."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _PERCENT.sub(one, text)


def _without_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    output: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/..")) and output and output[-1] != ""
    return "/" + "/".join(output) + ("/" if trailing else "")


def target_uri(url: str) -> str:
    """``url`` without query and fragment, normalised as RFC 9449 §4.3 asks (RFC 3986 §6.2.2 and
    §6.2.3): scheme and host in lower case, the default port dropped, percent-encodings normalised,
    dot segments removed, an empty path made ``/``. ValueError when it is not an http(s) URI."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None or parts.password is not None:
        raise ValueError("not an http or https URI")
    port = parts.port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = _without_dot_segments(_percent_normalized(parts.path)) if parts.path else "/"
    return f"{scheme}://{_percent_normalized(netloc)}{path}"


# ---------------------------------------------------------------- the proof


@dataclass(frozen=True, slots=True)
class Proof:
    """A DPoP proof that passed :func:`check_proof`: its key's thumbprint and its claims."""

    jkt: str
    jti: str
    iat: float
    nonce: str | None
    claims: Mapping[str, Any]


def _refused(description: str) -> InvalidTokenError:
    return InvalidTokenError("invalid_dpop_proof", description, scheme="DPoP")


def _public_key(jwk: Any, alg: str) -> Any:
    """The verification key of the proof's ``jwk`` header for ``alg``; refused unless it is a public
    key of the algorithm's type (and curve), without any private member."""
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        raise _refused("The DPoP proof's jwk must be a public key.")
    kty, curves = _KEY_TYPES[alg]
    crv = jwk.get("crv")
    if jwk.get("kty") != kty or (curves and not (isinstance(crv, str) and crv in curves)):
        raise _refused(f"The DPoP proof's jwk is not a key for {alg}.")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise _refused("The DPoP proof's jwk is not a valid public key.") from None
    if kty == "RSA" and key.key_size < _MIN_RSA_BITS:
        raise _refused(f"The DPoP proof's RSA key is shorter than {_MIN_RSA_BITS} bits.")
    return key


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str,
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
    now: float,
    lifetime: float,
    leeway: float,
) -> Proof:
    """Check one DPoP proof against the request it came with (RFC 9449 §4.3, §7.1); raise
    InvalidTokenError("invalid_dpop_proof") saying which check failed. The key binding, the nonce and
    replay are the verifier's to check."""
    if not isinstance(proof, str) or proof.count(".") != 2 or len(proof) > MAX_PROOF_LENGTH:
        raise _refused("The DPoP proof is not a JWT.")
    try:
        header = json.loads(_b64decode(proof[: proof.index(".")]))
    except (ValueError, RecursionError):
        raise _refused("The DPoP proof is not a JWT.") from None
    if not isinstance(header, dict):
        raise _refused("The DPoP proof is not a JWT.")
    if header.get("typ") != "dpop+jwt":
        raise _refused("The DPoP proof's typ must be dpop+jwt.")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in _KEY_TYPES:
        raise _refused(f"The DPoP proof's alg must be one of {' '.join(algorithms)}.")
    key = _public_key(header.get("jwk"), alg)
    try:
        claims = jwt.decode(proof, key, algorithms=[alg], options=_DECODE_OPTIONS)
    except jwt.InvalidSignatureError:
        raise _refused("The DPoP proof's signature does not verify with its jwk.") from None
    except jwt.PyJWTError:
        raise _refused("The DPoP proof is not a JWT.") from None

    jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
    if not (isinstance(jti, str) and jti and isinstance(htm, str) and isinstance(htu, str) and _number(iat)):
        raise _refused("The DPoP proof lacks jti, htm, htu or iat.")
    if len(jti) > 256:
        raise _refused("The DPoP proof's jti is too long.")
    if htm != method:
        raise _refused("The DPoP proof's htm is not this request's method.")
    try:
        same_target = target_uri(htu) == target_uri(url)
    except ValueError:
        same_target = False
    if not same_target:
        raise _refused("The DPoP proof's htu is not this request's URI.")
    if iat > now + leeway or iat < now - lifetime - leeway:
        raise _refused("The DPoP proof's iat is not recent.")
    ath = claims.get("ath")
    if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), access_token_hash(access_token).encode()):
        raise _refused("The DPoP proof's ath is not the hash of the access token.")
    nonce = claims.get("nonce")
    return Proof(
        jkt=jwk_thumbprint(header["jwk"]),
        jti=jti,
        iat=float(iat),
        nonce=nonce if isinstance(nonce, str) else None,
        claims=claims,
    )


# ---------------------------------------------------------------- replay and nonces


class ReplayCache:
    """The proof ``jti`` values this process has accepted, each until its proof's window has passed.

    Bounded: past ``max_entries`` the oldest are forgotten first (a proof is then accepted again only
    if it is still within its window, which with the default 60 s window takes more than
    ``max_entries`` proofs a minute). Several processes serving one resource see each other's proofs
    only through a shared store: pass ``dpop_replay_store=`` (see :data:`ReplayStore`).
    """

    def __init__(self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: str, expires_at: float) -> bool:
        now = self.clock()
        with self._lock:
            while self._seen:  # forget what has expired (oldest first; a few at a time)
                oldest, until = next(iter(self._seen.items()))
                if until > now:
                    break
                del self._seen[oldest]
            until = self._seen.get(key)
            if until is not None and until > now:
                return False
            self._seen[key] = expires_at
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._seen)


class DPoPNonces:
    """Nonces for DPoP proofs (RFC 9449 §9): handed out in ``DPoP-Nonce`` and then required.

    A nonce is the time it was made and a MAC of that time under ``secret``, so checking one needs
    no memory, and every process given the same ``secret`` accepts the others' nonces (each process
    makes its own random secret when none is given). A nonce is accepted for ``lifetime`` seconds.
    """

    def __init__(self, secret: bytes | None = None, *, lifetime: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        if secret is not None and len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime
        self.clock = clock

    def _mac(self, stamp: bytes) -> bytes:
        return hmac.new(self._secret, b"dpop-nonce" + stamp, hashlib.sha256).digest()[:16]

    def new(self) -> str:
        stamp = struct.pack(">Q", int(self.clock()))
        return b64url(stamp + self._mac(stamp))

    def valid(self, nonce: Any) -> bool:
        if not isinstance(nonce, str) or len(nonce) != 32:
            return False
        try:
            raw = _b64decode(nonce)
        except ValueError:
            return False
        if len(raw) != 24 or not hmac.compare_digest(raw[8:], self._mac(raw[:8])):
            return False
        made = struct.unpack(">Q", raw[:8])[0]
        return -5 <= self.clock() - made <= self.lifetime  # a few seconds of skew between processes' clocks
