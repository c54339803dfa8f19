"""grantd.sdk at a resource server for DPoP-bound access tokens (RFC 9449 §4.3, §6.1, §7, §9).

The access tokens are RFC 9068 JWTs minted here with an issuer key served from a JWKS over a
real socket, bound (``cnf.jkt``) to a client key made here; the proofs are built here with PyJWT,
and the expected thumbprints computed by joserfc, not by grantd.sdk. The resource servers (a
Starlette app behind RequirePermissionsMiddleware and a FastAPI app with require_permissions) run
under uvicorn and are called over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import Depends, FastAPI
from joserfc.jwk import import_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from grantd.sdk import AccessToken, DPoPNonces, InvalidTokenError, ReplayCache, RequirePermissionsMiddleware, TokenVerifier, require_permissions
from support.asgi import serve
from support.challenges import parse_challenges

ISSUER = "https://auth.example"
URL = "https://api.example/v1/things"
ALGS = "ES256 ES384 ES512 EdDSA RS256 RS384 RS512 PS256 PS384 PS512"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def public_jwk(private: Any) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    if isinstance(private, rsa.RSAPrivateKey):
        return jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    return jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)


@dataclass
class Holder:
    """A client's DPoP key: what it proves possession of."""

    alg: str = "ES256"
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.key)

    @property
    def jkt(self) -> str:
        """RFC 7638 thumbprint, by joserfc."""
        return import_key(self.jwk).thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        token: str | None = None,
        *,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        sign_with: Any = None,
    ) -> str:
        body: dict[str, Any] = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            body["ath"] = ath(token)
        body.update(claims or {})
        for name in drop:
            body.pop(name, None)
        head = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the short RSA key of one case
            return jwt.encode(body, sign_with or self.key, algorithm=self.alg, headers=head)


@dataclass
class Issuer:
    key: ec.EllipticCurvePrivateKey
    jwks_uri: str

    def verifier(self, **options: Any) -> TokenVerifier:
        return TokenVerifier(ISSUER, jwks_uri=self.jwks_uri, **options)

    def token(self, jkt: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER, "aud": ISSUER, "sub": "user-1", "client_id": "app-1", "user_id": "user-1",
            "jti": str(uuid.uuid4()), "scope": "read_profile", "permissions": ["read_profile"], "iat": now, "exp": now + 300,
        }
        if jkt is not None:
            body["cnf"] = {"jkt": jkt}
        body.update(claims)
        return jwt.encode(body, self.key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    key = ec.generate_private_key(ec.SECP256R1())
    document = {"keys": [{**public_jwk(key), "kid": "k1", "alg": "ES256", "use": "sig"}]}
    app = Starlette(routes=[Route("/jwks", lambda request: JSONResponse(document))])
    with serve(app) as base:
        yield Issuer(key, f"{base}/jwks")


def refusal(verifier: TokenVerifier, method: str, url: str, authorization: str | None, dpop: Any) -> InvalidTokenError:
    """The refusal of both verify_request and averify_request, which must agree."""
    with pytest.raises(InvalidTokenError) as sync:
        verifier.verify_request(method, url, authorization, dpop)
    with pytest.raises(InvalidTokenError) as asynchronous:
        asyncio.run(verifier.averify_request(method, url, authorization, dpop))
    assert (sync.value.reason, sync.value.error, sync.value.scheme) == (
        asynchronous.value.reason, asynchronous.value.error, asynchronous.value.scheme,
    )
    return sync.value


# ---------------------------------------------------------------- the verifier


def test_a_bound_token_with_its_proof_is_verified_sync_and_async(issuer: Issuer) -> None:
    holder = Holder()
    token = issuer.token(holder.jkt)
    verifier = issuer.verifier()
    access = verifier.verify_request("GET", URL, f"DPoP {token}", holder.proof("GET", URL, token))
    assert isinstance(access, AccessToken) and access.jkt == holder.jkt and access.user_id == "user-1"
    assert access.claims["cnf"] == {"jkt": holder.jkt}
    again = asyncio.run(verifier.averify_request("GET", URL, f"dpop {token}", [holder.proof("GET", URL, token)]))
    assert again == access  # the scheme's name is case-insensitive; a list of one DPoP header is one proof


@pytest.mark.parametrize(
    "holder",
    [
        Holder("ES384", ec.generate_private_key(ec.SECP384R1())),
        Holder("ES512", ec.generate_private_key(ec.SECP521R1())),
        Holder("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        Holder("RS256", rsa.generate_private_key(65537, 2048)),
        Holder("PS256", rsa.generate_private_key(65537, 2048)),
    ],
    ids=lambda h: h.alg,
)
def test_every_allowed_asymmetric_algorithm_proves(issuer: Issuer, holder: Holder) -> None:
    token = issuer.token(holder.jkt)
    access = issuer.verifier().verify_request("POST", URL, f"DPoP {token}", holder.proof("POST", URL, token))
    assert access.jkt == holder.jkt


def test_the_request_uri_is_compared_without_query_and_fragment_and_normalised(issuer: Issuer) -> None:
    """RFC 9449 §4.3 item 9: htu against the request's URI, query and fragment ignored, after RFC 3986
    syntax- and scheme-based normalisation."""
    holder = Holder()
    token = issuer.token(holder.jkt)
    verifier = issuer.verifier()
    same = [
        ("https://api.example/v1/things?page=2", URL),
        (URL, "https://api.example/v1/things?page=2#top"),
        ("HTTPS://API.Example:443/v1/things", URL),
        ("https://api.example/v1/%74hings", URL),
        ("https://api.example/v1/x/../things", URL),
        ("http://api.example:80", "http://api.example/"),
    ]
    for htu, request_url in same:
        assert verifier.verify_request("GET", request_url, f"DPoP {token}", holder.proof("GET", htu, token)).jkt == holder.jkt, htu
    different = [
        ("https://api.example/v1/things/", URL),
        ("https://api.example/v1/other", URL),
        ("http://api.example/v1/things", URL),
        ("https://api.example:8443/v1/things", URL),
        ("https://evil.example/v1/things", URL),
        ("https://user@api.example/v1/things", URL),
        ("/v1/things", URL),
        ("not a uri", URL),
    ]
    for htu, request_url in different:
        refused = refusal(verifier, "GET", request_url, f"DPoP {token}", holder.proof("GET", htu, token))
        assert (refused.error, refused.description) == ("invalid_dpop_proof", "The DPoP proof's htu is not this request's URI."), htu


def test_each_check_of_the_proof_refuses_with_invalid_dpop_proof(issuer: Issuer) -> None:
    """Each MUST of RFC 9449 §4.3 (and §7.1's ath), one proof breaking it at a time."""
    holder, other = Holder(), Holder()
    token = issuer.token(holder.jkt)
    verifier = issuer.verifier(dpop_algorithms=("ES256", "RS256", "EdDSA"))
    now = int(time.time())
    unsigned = b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": holder.jwk}).encode())
    unsigned += "." + b64(json.dumps({"jti": "j", "htm": "GET", "htu": URL, "iat": now, "ath": ath(token)}).encode()) + "."
    hmac_proof = jwt.encode(
        {"jti": "j", "htm": "GET", "htu": URL, "iat": now, "ath": ath(token)}, "a-shared-secret-of-enough-length!",
        algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": holder.jwk},
    )
    rsa_holder = Holder("RS256", rsa.generate_private_key(65537, 2048))
    short_rsa = Holder("RS256", rsa.generate_private_key(65537, 1024))
    private_jwk = {**holder.jwk, "d": b64(holder.key.private_numbers().private_value.to_bytes(32, "big"))}
    cases = {
        "not a JWT": ("garbage", "The DPoP proof is not a JWT."),
        "a JWT with junk for a header": ("!!." + holder.proof("GET", URL, token).split(".", 1)[1], "The DPoP proof is not a JWT."),
        "typ missing": (holder.proof("GET", URL, token, header={"typ": None}), "The DPoP proof's typ must be dpop+jwt."),
        "typ JWT": (holder.proof("GET", URL, token, header={"typ": "JWT"}), "The DPoP proof's typ must be dpop+jwt."),
        "alg none": (unsigned, "The DPoP proof's alg must be one of ES256 RS256 EdDSA."),
        "alg HS256": (hmac_proof, "The DPoP proof's alg must be one of ES256 RS256 EdDSA."),
        "alg not allowed here": (Holder("PS256", rsa_holder.key).proof("GET", URL, token), "The DPoP proof's alg must be one of ES256 RS256 EdDSA."),
        "no jwk": (holder.proof("GET", URL, token, header={"jwk": None}), "The DPoP proof's jwk must be a public key."),
        "a private jwk": (holder.proof("GET", URL, token, header={"jwk": private_jwk}), "The DPoP proof's jwk must be a public key."),
        "an RSA jwk under ES256": (holder.proof("GET", URL, token, header={"jwk": rsa_holder.jwk}), "The DPoP proof's jwk is not a key for ES256."),
        "a P-384 jwk under ES256": (
            holder.proof("GET", URL, token, header={"jwk": public_jwk(ec.generate_private_key(ec.SECP384R1()))}),
            "The DPoP proof's jwk is not a key for ES256.",
        ),
        "an RSA key of 1024 bits": (short_rsa.proof("GET", URL, token), "The DPoP proof's RSA key is shorter than 2048 bits."),
        "signed by another key than its jwk": (
            holder.proof("GET", URL, token, sign_with=other.key), "The DPoP proof's signature does not verify with its jwk.",
        ),
        "no jti": (holder.proof("GET", URL, token, drop=("jti",)), "The DPoP proof lacks jti, htm, htu or iat."),
        "no htm": (holder.proof("GET", URL, token, drop=("htm",)), "The DPoP proof lacks jti, htm, htu or iat."),
        "no htu": (holder.proof("GET", URL, token, drop=("htu",)), "The DPoP proof lacks jti, htm, htu or iat."),
        "no iat": (holder.proof("GET", URL, token, drop=("iat",)), "The DPoP proof lacks jti, htm, htu or iat."),
        "iat a string": (holder.proof("GET", URL, token, claims={"iat": str(now)}), "The DPoP proof lacks jti, htm, htu or iat."),
        "htm of another method": (holder.proof("POST", URL, token), "The DPoP proof's htm is not this request's method."),
        "htm in lower case": (holder.proof("get", URL, token), "The DPoP proof's htm is not this request's method."),
        "iat too old": (holder.proof("GET", URL, token, claims={"iat": now - 60 - 30 - 5}), "The DPoP proof's iat is not recent."),
        "iat in the future": (holder.proof("GET", URL, token, claims={"iat": now + 30 + 5}), "The DPoP proof's iat is not recent."),
        "no ath": (holder.proof("GET", URL), "The DPoP proof's ath is not the hash of the access token."),
        "ath of another token": (
            holder.proof("GET", URL, issuer.token(holder.jkt)), "The DPoP proof's ath is not the hash of the access token.",
        ),
        "two DPoP headers": ([holder.proof("GET", URL, token), holder.proof("GET", URL, token)], "Send exactly one DPoP header."),
        "no DPoP header": (None, "A DPoP proof is required with a DPoP-bound token."),
        "an empty list of DPoP headers": ([], "A DPoP proof is required with a DPoP-bound token."),
    }
    for name, (proof, description) in cases.items():
        refused = refusal(verifier, "GET", URL, f"DPoP {token}", proof)
        assert (refused.error, refused.scheme, refused.description) == ("invalid_dpop_proof", "DPoP", description), name
    # Within the window, on either side, the same proof shape is accepted.
    for iat in (now - 60 - 25, now + 25):
        assert verifier.verify_request("GET", URL, f"DPoP {token}", holder.proof("GET", URL, token, claims={"iat": iat})).jkt == holder.jkt


def test_the_proof_must_be_signed_by_the_key_the_token_is_bound_to(issuer: Issuer) -> None:
    holder, thief = Holder(), Holder()
    token = issuer.token(holder.jkt)
    refused = refusal(issuer.verifier(), "GET", URL, f"DPoP {token}", thief.proof("GET", URL, token))
    assert (refused.reason, refused.error, refused.scheme) == ("dpop_key_mismatch", "invalid_token", "DPoP")
    assert refused.description == "Invalid DPoP key binding."


def test_a_bound_token_as_a_bearer_and_an_unbound_one_as_dpop_are_refused(issuer: Issuer) -> None:
    holder = Holder()
    bound, unbound = issuer.token(holder.jkt), issuer.token()
    verifier = issuer.verifier()
    for proof in (None, holder.proof("GET", URL, bound)):  # a proof beside a Bearer token changes nothing
        refused = refusal(verifier, "GET", URL, f"Bearer {bound}", proof)
        assert (refused.reason, refused.error, refused.scheme) == ("dpop_bound", "invalid_token", "Bearer")
    with pytest.raises(InvalidTokenError) as caught:
        verifier.verify(bound)  # the bare token is taken as a bearer token
    assert caught.value.reason == "dpop_bound"
    with pytest.raises(InvalidTokenError) as caught:
        asyncio.run(verifier.averify(bound))
    assert caught.value.reason == "dpop_bound"

    refused = refusal(verifier, "GET", URL, f"DPoP {unbound}", holder.proof("GET", URL, unbound))
    assert (refused.reason, refused.error, refused.scheme) == ("not_dpop_bound", "invalid_token", "DPoP")
    # The unbound token as a bearer token is still fine, by verify and verify_request alike.
    assert verifier.verify(unbound).jkt is None
    assert verifier.verify_request("GET", URL, f"Bearer {unbound}", None).jkt is None

    for cnf in ({"x5t#S256": "abc"}, {"jkt": ""}, {"jkt": 7}, "jkt"):  # a binding it cannot check is not ignored
        refused = refusal(verifier, "GET", URL, f"Bearer {issuer.token(cnf=cnf)}", None)
        assert refused.reason == "missing_claim", cnf


def test_dpop_required_refuses_bearer_tokens(issuer: Issuer) -> None:
    holder = Holder()
    bound, unbound = issuer.token(holder.jkt), issuer.token()
    verifier = issuer.verifier(dpop_required=True)
    assert verifier.verify_request("GET", URL, f"DPoP {bound}", holder.proof("GET", URL, bound)).jkt == holder.jkt
    refused = refusal(verifier, "GET", URL, f"Bearer {unbound}", None)
    assert (refused.reason, refused.error, refused.scheme) == ("bearer_refused", "invalid_token", "Bearer")


def test_a_proof_is_accepted_once(issuer: Issuer) -> None:
    holder = Holder()
    token = issuer.token(holder.jkt)
    verifier = issuer.verifier()
    proof = holder.proof("GET", URL, token)
    verifier.verify_request("GET", URL, f"DPoP {token}", proof)
    refused = refusal(verifier, "GET", URL, f"DPoP {token}", proof)
    assert (refused.reason, refused.error, refused.description) == ("dpop_replayed", "invalid_dpop_proof", "The DPoP proof was used before.")
    # Another proof of the same key with the same jti is the same proof to the cache.
    same_jti = holder.proof("GET", URL, token, claims={"jti": json.loads(base64.urlsafe_b64decode(proof.split(".")[1] + "=="))["jti"]})
    assert refusal(verifier, "GET", URL, f"DPoP {token}", same_jti).reason == "dpop_replayed"
    # A refused proof is not remembered: refused for its own fault, it is not a replay where it fits.
    wrong_method = holder.proof("POST", URL, token)
    assert refusal(verifier, "GET", URL, f"DPoP {token}", wrong_method).reason == "invalid_dpop_proof"
    assert verifier.verify_request("POST", URL, f"DPoP {token}", wrong_method).jkt == holder.jkt


def test_processes_sharing_a_replay_store_refuse_each_others_proofs(issuer: Issuer) -> None:
    """What a resource server of several processes plugs in: here a dict behind an async callable,
    as a Redis SET NX would be."""
    holder = Holder()
    token = issuer.token(holder.jkt)
    shared: dict[str, float] = {}
    calls: list[tuple[str, float]] = []

    async def store(key: str, expires_at: float) -> bool:
        calls.append((key, expires_at))
        if key in shared:
            return False
        shared[key] = expires_at
        return True

    first, second = issuer.verifier(dpop_replay_store=store), issuer.verifier(dpop_replay_store=store)
    proof = holder.proof("GET", URL, token)
    iat = json.loads(base64.urlsafe_b64decode(proof.split(".")[1] + "=="))["iat"]
    assert asyncio.run(first.averify_request("GET", URL, f"DPoP {token}", proof)).jkt == holder.jkt
    with pytest.raises(InvalidTokenError) as caught:
        asyncio.run(second.averify_request("GET", URL, f"DPoP {token}", proof))
    assert caught.value.reason == "dpop_replayed"
    assert len(calls) == 2 and calls[0] == calls[1] and calls[0][1] == iat + 60 + 30  # kept for the proof's whole window
    assert holder.jkt not in calls[0][0], "the key names the proof without spelling out the client's key"
    with pytest.raises(TypeError):  # a store that answers later needs the async method
        first.verify_request("GET", URL, f"DPoP {token}", holder.proof("GET", URL, token))

    # Without a shared store, each process remembers only its own.
    alone = holder.proof("GET", URL, token)
    issuer.verifier().verify_request("GET", URL, f"DPoP {token}", alone)
    assert issuer.verifier().verify_request("GET", URL, f"DPoP {token}", alone).jkt == holder.jkt


def test_the_replay_cache_is_bounded_and_forgets_what_expired() -> None:
    now = [1000.0]
    cache = ReplayCache(3, clock=lambda: now[0])
    assert [cache(k, 1100) for k in "abc"] == [True, True, True]
    assert cache("a", 1100) is False
    assert cache("d", 1100) is True and len(cache) == 3  # full: the oldest, "a", is forgotten
    assert cache("a", 1100) is True and cache("c", 1100) is False
    now[0] = 1100.0
    assert cache("c", 1200) is True, "an expired entry no longer refuses"
    assert len(cache) == 1
    with pytest.raises(ValueError):
        ReplayCache(0)


def test_a_nonce_is_required_when_the_verifier_asks_for_one(issuer: Issuer) -> None:
    """RFC 9449 §9: use_dpop_nonce with a DPoP-Nonce to retry with; the retry is accepted."""
    holder = Holder()
    token = issuer.token(holder.jkt)
    now = [time.time()]
    nonces = DPoPNonces(b"a secret the processes share", lifetime=120, clock=lambda: now[0])
    verifier, other_process = issuer.verifier(dpop_nonce=nonces), issuer.verifier(dpop_nonce=DPoPNonces(b"a secret the processes share"))

    refused = refusal(verifier, "GET", URL, f"DPoP {token}", holder.proof("GET", URL, token))
    assert (refused.reason, refused.error, refused.scheme) == ("use_dpop_nonce", "use_dpop_nonce", "DPoP")
    nonce = refused.dpop_nonce
    assert isinstance(nonce, str) and nonce
    assert verifier.verify_request("GET", URL, f"DPoP {token}", holder.proof("GET", URL, token, claims={"nonce": nonce})).jkt == holder.jkt
    assert other_process.verify_request("GET", URL, f"DPoP {token}", holder.proof("GET", URL, token, claims={"nonce": nonce})).jkt

    for bad in ("made-up", nonce[:-2] + ("AA" if not nonce.endswith("AA") else "BB"), DPoPNonces().new()):
        refused = refusal(verifier, "GET", URL, f"DPoP {token}", holder.proof("GET", URL, token, claims={"nonce": bad}))
        assert refused.reason == "use_dpop_nonce" and refused.dpop_nonce, bad
    now[0] += 121
    refused = refusal(verifier, "GET", URL, f"DPoP {token}", holder.proof("GET", URL, token, claims={"nonce": nonce}))
    assert refused.reason == "use_dpop_nonce", "a nonce past its lifetime"
    # Every refusal hands out a nonce, so that a client learns it before its first real try.
    assert refusal(verifier, "GET", URL, None, None).dpop_nonce
    # Without nonces, none is asked for nor handed out.
    plain = refusal(issuer.verifier(), "GET", URL, f"DPoP {token}", holder.proof("POST", URL, token))
    assert plain.dpop_nonce is None


def test_settings_that_would_weaken_dpop_are_refused() -> None:
    for options in ({"dpop_algorithms": ["HS256"]}, {"dpop_algorithms": ["none"]}, {"dpop_algorithms": []}, {"dpop_proof_lifetime": 0}):
        with pytest.raises(ValueError):
            TokenVerifier(ISSUER, **options)
    with pytest.raises(ValueError):
        DPoPNonces(b"short")


# ---------------------------------------------------------------- the Starlette middleware and the FastAPI dependency, over HTTP


async def whoami(request: Request) -> JSONResponse:
    token: AccessToken = request.state.access_token
    return JSONResponse({"user_id": token.user_id, "jkt": token.jkt})


def starlette_app(verifier: TokenVerifier, permissions: list[str]) -> Starlette:
    app = Starlette(routes=[Route("/whoami", whoami, methods=["GET", "POST"])])
    app.add_middleware(RequirePermissionsMiddleware, verifier=verifier, permissions=permissions)
    return app


def fastapi_app(verifier: TokenVerifier, permissions: list[str]) -> FastAPI:
    app = FastAPI()
    guard = Depends(require_permissions(*permissions, verifier=verifier))

    @app.api_route("/whoami", methods=["GET", "POST"])
    async def me(token: AccessToken = guard) -> dict[str, Any]:
        return {"user_id": token.user_id, "jkt": token.jkt}

    return app


def body_error(response: httpx.Response) -> str:
    body = response.json()
    return (body.get("detail") or body)["error"]


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette-middleware", "fastapi-dependency"])
def test_the_middleware_and_the_dependency_verify_dpop_requests_and_answer_with_both_challenges(issuer: Issuer, make_app: Any) -> None:
    holder = Holder()
    bound, unbound = issuer.token(holder.jkt), issuer.token()
    with serve(make_app(issuer.verifier(), ["read_profile"])) as api, serve(make_app(issuer.verifier(), ["write_data"])) as writer:
        url = f"{api}/whoami"
        ok = httpx.get(url, params={"q": "1"}, headers={"Authorization": f"DPoP {bound}", "DPoP": holder.proof("GET", url, bound)})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"user_id": "user-1", "jkt": holder.jkt}
        posted = httpx.post(url, headers={"Authorization": f"DPoP {bound}", "DPoP": holder.proof("POST", url, bound)})
        assert posted.status_code == 200 and posted.json()["jkt"] == holder.jkt
        assert httpx.get(url, headers={"Authorization": f"Bearer {unbound}"}).json() == {"user_id": "user-1", "jkt": None}

        def refused(response: httpx.Response, scheme: str, error: str) -> dict[str, dict[str, str]]:
            assert response.status_code == 401, response.text
            challenges = parse_challenges(response.headers["www-authenticate"])
            assert list(challenges) == ["Bearer", "DPoP"] and challenges["DPoP"]["algs"] == ALGS
            assert challenges[scheme]["error"] == error and body_error(response) == error
            other = "Bearer" if scheme == "DPoP" else "DPoP"
            assert "error" not in challenges[other], "the error goes on the challenge of the scheme used"
            return challenges

        # A proof for another method, another URL, replayed, two proofs, none: invalid_dpop_proof.
        replayed = holder.proof("GET", url, bound)
        assert httpx.get(url, headers={"Authorization": f"DPoP {bound}", "DPoP": replayed}).status_code == 200
        for headers in (
            [("Authorization", f"DPoP {bound}"), ("DPoP", holder.proof("POST", url, bound))],
            [("Authorization", f"DPoP {bound}"), ("DPoP", holder.proof("GET", f"{writer}/whoami", bound))],
            [("Authorization", f"DPoP {bound}"), ("DPoP", replayed)],
            [("Authorization", f"DPoP {bound}"), ("DPoP", holder.proof("GET", url, bound)), ("DPoP", holder.proof("GET", url, bound))],
            [("Authorization", f"DPoP {bound}")],
        ):
            refused(httpx.get(url, headers=headers), "DPoP", "invalid_dpop_proof")
        # Another key's proof, an unbound token as DPoP: invalid_token on the DPoP challenge.
        thief = Holder()
        challenges = refused(
            httpx.get(url, headers={"Authorization": f"DPoP {bound}", "DPoP": thief.proof("GET", url, bound)}), "DPoP", "invalid_token"
        )
        assert challenges["DPoP"]["error_description"] == "Invalid DPoP key binding."
        refused(httpx.get(url, headers={"Authorization": f"DPoP {unbound}", "DPoP": holder.proof("GET", url, unbound)}), "DPoP", "invalid_token")
        # The bound token as a bearer: invalid_token on the Bearer challenge.
        refused(httpx.get(url, headers={"Authorization": f"Bearer {bound}"}), "Bearer", "invalid_token")

        # A valid DPoP token without the permission: 403 insufficient_scope on the DPoP challenge.
        target = f"{writer}/whoami"
        denied = httpx.get(target, headers={"Authorization": f"DPoP {bound}", "DPoP": holder.proof("GET", target, bound)})
        assert denied.status_code == 403 and body_error(denied) == "insufficient_scope"
        challenges = parse_challenges(denied.headers["www-authenticate"])
        assert challenges["DPoP"]["error"] == "insufficient_scope" and challenges["DPoP"]["scope"] == "write_data"
        assert "error" not in challenges["Bearer"]


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette-middleware", "fastapi-dependency"])
def test_the_middleware_and_the_dependency_hand_out_nonces_and_accept_the_retry(issuer: Issuer, make_app: Any) -> None:
    holder = Holder()
    bound = issuer.token(holder.jkt)
    with serve(make_app(issuer.verifier(dpop_nonce=True), [])) as api:
        url = f"{api}/whoami"
        first = httpx.get(url, headers={"Authorization": f"DPoP {bound}", "DPoP": holder.proof("GET", url, bound)})
        assert first.status_code == 401 and body_error(first) == "use_dpop_nonce"
        assert parse_challenges(first.headers["www-authenticate"])["DPoP"]["error"] == "use_dpop_nonce"
        nonce = first.headers["dpop-nonce"]
        retry = httpx.get(url, headers={"Authorization": f"DPoP {bound}", "DPoP": holder.proof("GET", url, bound, claims={"nonce": nonce})})
        assert retry.status_code == 200, retry.text


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette-middleware", "fastapi-dependency"])
def test_a_resource_requiring_dpop_offers_only_the_dpop_challenge(issuer: Issuer, make_app: Any) -> None:
    holder = Holder()
    bound, unbound = issuer.token(holder.jkt), issuer.token()
    with serve(make_app(issuer.verifier(dpop_required=True), [])) as api:
        url = f"{api}/whoami"
        missing = httpx.get(url)
        assert missing.status_code == 401
        assert parse_challenges(missing.headers["www-authenticate"]) == {"DPoP": {"realm": ISSUER, "algs": ALGS}}
        bearer = httpx.get(url, headers={"Authorization": f"Bearer {unbound}"})
        assert bearer.status_code == 401 and body_error(bearer) == "invalid_token"
        assert httpx.get(url, headers={"Authorization": f"DPoP {bound}", "DPoP": holder.proof("GET", url, bound)}).status_code == 200


def test_any_junk_in_a_proof_is_refused_never_raised_otherwise(issuer: Issuer) -> None:
    """Every header and claim of the proof set to values of every JSON type: accepted where the value
    is harmless, else an InvalidTokenError (a 401 from the middleware or the dependency), never another exception (a 500)."""
    holder = Holder()
    token = issuer.token(holder.jkt)
    verifier = issuer.verifier()
    junk: list[Any] = [None, True, 0, -1, 1e308, "", "x" * 5000, [], ["ES256"], {}, {"kty": ["EC"]}, "dpop+jwt"]
    accepted: list[tuple[str, Any]] = []
    refused = 0

    def judge(where: tuple[str, Any], dpop: Any, authorization: str = f"DPoP {token}") -> None:
        nonlocal refused
        try:
            verifier.verify_request("GET", URL, authorization, dpop)
        except InvalidTokenError:
            refused += 1
        else:
            accepted.append(where)

    for name in ("typ", "alg", "jwk", "kid"):
        values = junk + ([{**holder.jwk, m: v} for m in ("kty", "crv", "x", "y") for v in junk] if name == "jwk" else [])
        for value in values:
            def proof() -> str:
                header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": holder.jwk, name: value}
                claims = {"jti": str(uuid.uuid4()), "htm": "GET", "htu": URL, "iat": int(time.time()), "ath": ath(token)}
                signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
                signature = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).sign(signing_input.encode(), holder.key)
                return f"{signing_input}.{b64(signature)}"

            judge((name, value), proof())
            judge((name, value), [proof()])
            judge((name, value), "é" + proof())
    for claim in ("jti", "htm", "htu", "iat", "ath", "nonce"):
        for value in junk:
            judge((claim, value), holder.proof("GET", URL, token, claims={claim: value}))
    for authorization in ("DPoP", "DPoP ", f"DPoP {token} {token}", "dpop x.y.z", "DPoP é"):
        judge(("authorization", authorization), holder.proof("GET", URL, token), authorization)

    # Harmless: the right typ, a kid that is a string (a proof's key is its jwk), a jti that is a short
    # string, any nonce when none is required.
    kinds = {(where, str(value)[:20]) for where, value in accepted}
    assert {where for where, _ in accepted} == {"typ", "kid", "jti", "nonce"}, kinds
    assert [value for where, value in accepted if where == "jti"] == ["dpop+jwt"]
    assert len([where for where, _ in accepted if where == "nonce"]) == len(junk)
    assert [where for where in accepted if where[0] == "typ"] == [("typ", "dpop+jwt")] * 2
    assert sorted(value for where, value in accepted if where == "kid") == sorted(2 * ["", "x" * 5000, "dpop+jwt"])
    assert refused > 200


NODE_DIR = Path(__file__).parent / "interop" / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")
def test_oauth4webapi_as_a_dpop_client_through_a_nonce_challenge(issuer: Issuer) -> None:
    """An independent DPoP client (oauth4webapi, tests/interop/node/dpop_resource.mjs) calls a resource
    that requires nonces: the first try gets use_dpop_nonce, the library retries with the nonce it
    was given, and its proof is accepted."""
    assert (NODE_DIR / "node_modules" / "oauth4webapi").is_dir(), "run `make interop-deps`"
    with serve(starlette_app(issuer.verifier(dpop_nonce=True), ["read_profile"])) as api:
        node = subprocess.Popen(
            ["node", "dpop_resource.mjs"], cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            jkt = json.loads(node.stdout.readline())["jkt"]  # type: ignore[union-attr]
            token = issuer.token(jkt)
            out, err = node.communicate(json.dumps({"token": token, "url": f"{api}/whoami?from=node"}) + "\n", timeout=60)
        finally:
            if node.poll() is None:
                node.kill()
    assert node.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    first, *_ = report["tries"]
    assert first["status"] == 401 and first["nonce_error"] is True, report
    dpop = next(c for c in first["challenges"] if c["scheme"] == "dpop")
    assert dpop["parameters"]["error"] == "use_dpop_nonce" and dpop["parameters"]["algs"] == ALGS
    assert [c["scheme"] for c in first["challenges"]] == ["bearer", "dpop"]
    assert len(report["tries"]) == 2 and report["final"] == {"status": 200, "body": {"user_id": "user-1", "jkt": jkt}}, report
