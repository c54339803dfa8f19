"""grantd.sdk against a real grantd process: the verifier, the FastAPI dependency, the Starlette
middleware, and examples/profile_api.py served by uvicorn.

The resource servers run in this process (uvicorn in a thread); grantd runs as `grantd serve`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from grantd.sdk import AccessToken, InvalidTokenError, RequirePermissionsMiddleware, TokenVerifier
from support.asgi import serve
from support.challenges import parse_challenges
from support.neucron import Flow, new_flow
from support.servers import ServerProcess, free_port, server_on_new_sqlite, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import profile_api  # noqa: E402

pytestmark = pytest.mark.db

SERVER_PACKAGES = ("fastapi", "starlette", "sqlalchemy", "alembic", "pydantic", "pydantic_settings", "uvicorn", "asyncpg")


# ---------------------------------------------------------------- servers and tokens


@pytest.fixture(scope="module")
def grantd(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    """One grantd process for this module, on its own SQLite file."""
    with server_on_new_sqlite(tmp_path_factory, secret_key, "sdk") as server:
        yield server


async def user_token(server: ServerProcess, permissions: str = "read_profile,write_data") -> tuple[str, Flow]:
    """A user's access token from the Neucron flow on a real server, and the flow (app, key, user)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        flow = await new_flow(client)
        code = await flow.code(permissions=permissions)
        response = await flow.redeem(code)
        assert response.status_code == 200, response.text
        return response.json()["data"]["access_token"], flow


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def forge(token: str, *, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None) -> str:
    """The token with header and claims changed, its original signature kept."""
    h, c = segments(token)
    h.update(header or {})
    c.update(claims or {})
    signature = token.rsplit(".", 1)[1]
    return f"{b64(json.dumps(h).encode())}.{b64(json.dumps(c).encode())}.{signature}"


def sign_es256(claims: dict[str, Any], kid: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    return jwt.encode(claims, key or ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})


def jwks(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()


def hs256(token: str, secret: bytes) -> str:
    """The token's claims under an HS256 header naming the same kid, MACed with ``secret``."""
    kid = jwt.get_unverified_header(token)["kid"]
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid}).encode())}.{token.split('.')[1]}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def public_key_pem(server: ServerProcess, token: str) -> bytes:
    """The PEM of the public key that signed ``token``: what an algorithm-confusion attacker MACs with."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks(server)["keys"] if k["kid"] == kid)
    return jwt.PyJWK(jwk).key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def www_authenticate(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def bearer_challenge(response: httpx.Response) -> dict[str, str]:
    """The auth-params of the response's ``WWW-Authenticate: Bearer …`` challenge (RFC 7235 §4.1);
    the DPoP challenge beside it (RFC 9449 §7.1) carries no error for a bearer token."""
    challenges = parse_challenges(www_authenticate(response))
    assert list(challenges) == ["Bearer", "DPoP"], www_authenticate(response)
    assert "error" not in challenges["DPoP"], www_authenticate(response)
    return challenges["Bearer"]


def bare_challenges(realm: str) -> dict[str, dict[str, str]]:
    """The challenges of a request without a token (RFC 6750 §3.1, RFC 9449 §7.1): no error code."""
    return {"Bearer": {"realm": realm}, "DPoP": {"realm": realm, "algs": "ES256 ES384 ES512 EdDSA RS256 RS384 RS512 PS256 PS384 PS512"}}


# ---------------------------------------------------------------- importing the SDK alone


def test_the_sdk_imports_none_of_the_servers_dependencies() -> None:
    code = (
        "import sys, grantd.sdk\n"
        "from grantd.sdk import TokenVerifier, AccessToken, InvalidTokenError\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_PACKAGES!r} + ('httpx',)))\n"
        "server = sorted(m for m in sys.modules if m.startswith('grantd.') and not m.startswith('grantd.sdk'))\n"
        "print(loaded, server)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "[] []", result.stdout


def test_the_sdk_verifies_a_token_where_the_server_cannot_even_be_imported(grantd: ServerProcess, tmp_path: Path) -> None:
    """An interpreter where FastAPI, Starlette, SQLAlchemy, pydantic… raise ImportError still verifies a real token."""
    token, flow = asyncio.run(user_token(grantd))
    script = tmp_path / "verify.py"
    script.write_text(
        "import sys\n"
        f"BLOCKED = set({SERVER_PACKAGES!r})\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from grantd.sdk import TokenVerifier\n"
        "token = TokenVerifier(sys.argv[1]).verify(sys.argv[2])\n"
        "print(token.user_id, token.app_id, ','.join(token.permissions))\n"
        "try:\n"
        "    import fastapi\n"
        "except ImportError:\n"
        "    print('fastapi blocked')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), grantd.base_url, token], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [f"{flow.user_id} {flow.app_id} read_profile,write_data", "fastapi blocked"]


# ---------------------------------------------------------------- the verifier


async def test_a_valid_token_gives_a_typed_access_token_sync_and_async(grantd: ServerProcess) -> None:
    token, flow = await user_token(grantd)
    verifier = TokenVerifier(grantd.base_url)
    sync = await asyncio.to_thread(verifier.verify, token)
    assert isinstance(sync, AccessToken)
    assert sync.user_id == flow.user_id and sync.subject == flow.user_id
    assert sync.app_id == flow.app_id
    assert sync.permissions == ("read_profile", "write_data") and sync.scope == "read_profile write_data"
    assert sync.has("read_profile") and not sync.has("manage_notifications")
    assert sync.expires_at.tzinfo is not None and sync.expires_at.timestamp() == sync.claims["exp"]
    assert sync.jti == sync.claims["jti"]
    with pytest.raises(Exception):
        sync.user_id = "someone else"  # type: ignore[misc]
    assert await verifier.averify(token) == sync
    await verifier.aclose()


async def test_an_apps_own_token_has_no_user(grantd: ServerProcess) -> None:
    _, flow = await user_token(grantd)
    response = httpx.post(
        f"{grantd.base_url}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "read_profile"},
        auth=(flow.app_id, flow.key_secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    access = await TokenVerifier(grantd.base_url).averify(response.json()["access_token"])
    assert access.user_id is None and access.subject == flow.app_id and access.app_id == flow.app_id
    assert access.permissions == ("read_profile",)


async def test_every_kind_of_bad_token_is_refused_with_its_reason(grantd: ServerProcess) -> None:
    token, _ = await user_token(grantd)
    header, claims = segments(token)
    kid = header["kid"]
    public_key = next(k for k in jwks(grantd)["keys"] if k["kid"] == kid)
    pem = public_key_pem(grantd, token)
    alg_none = f"{b64(json.dumps({'alg': 'none', 'typ': 'at+jwt', 'kid': kid}).encode())}.{token.split('.')[1]}."
    cases = {
        "tampered claims": (forge(token, claims={"permissions": ["read_profile", "manage_notifications"]}), "bad_signature"),
        "another key under grantd's kid": (sign_es256(claims, kid), "bad_signature"),
        "unknown kid": (sign_es256(claims, str(uuid.uuid4())), "unknown_key"),
        "alg none": (alg_none, "unsupported_algorithm"),
        "HS256 keyed with the public key (PEM)": (hs256(token, pem), "unsupported_algorithm"),
        "HS256 keyed with the public key (JWK)": (hs256(token, json.dumps(public_key).encode()), "unsupported_algorithm"),
        "not an access token (typ JWT)": (forge(token, header={"typ": "JWT"}), "wrong_type"),
        "garbage": ("not.a.token", "malformed"),
        "two segments": (".".join(token.split(".")[:2]), "malformed"),
        "junk characters in the header": ("!" + token, "malformed"),
        "not a string": ([token], "malformed"),
        "none": (None, "malformed"),
    }
    verifier = TokenVerifier(grantd.base_url)
    for name, (bad, reason) in cases.items():
        with pytest.raises(InvalidTokenError) as caught:
            await verifier.averify(bad)
        assert caught.value.reason == reason, name
        with pytest.raises(InvalidTokenError) as caught:
            await asyncio.to_thread(verifier.verify, bad)
        assert caught.value.reason == reason, name

    wrong = {
        "wrong_audience": TokenVerifier(grantd.base_url, audience="https://api.other.example"),
        "wrong_issuer": TokenVerifier("https://issuer.other.example", jwks_uri=f"{grantd.base_url}/.well-known/jwks.json"),
    }
    for reason, misconfigured in wrong.items():
        with pytest.raises(InvalidTokenError) as caught:
            await misconfigured.averify(token)
        assert caught.value.reason == reason

    # Discovery for another issuer is refused too: the metadata must name the issuer asked for.
    spoofed = TokenVerifier("https://issuer.other.example", discovery_url=f"{grantd.base_url}/.well-known/oauth-authorization-server")
    with pytest.raises(InvalidTokenError) as caught:
        await spoofed.averify(token)
    assert caught.value.reason == "unavailable"


async def test_expiry_and_not_before_are_checked_with_the_leeway(grantd: ServerProcess) -> None:
    token, _ = await user_token(grantd)
    _, claims = segments(token)
    exp, iat = claims["exp"], claims["iat"]

    def at(now: float, leeway: float = 30) -> TokenVerifier:
        return TokenVerifier(grantd.base_url, leeway=leeway, clock=lambda: now)

    assert (await at(exp + 29).averify(token)).jti == claims["jti"]  # within the leeway
    for verifier in (at(exp + 31), at(exp + 1, leeway=0)):
        with pytest.raises(InvalidTokenError) as caught:
            await verifier.averify(token)
        assert caught.value.reason == "expired"
    with pytest.raises(InvalidTokenError) as caught:
        await at(iat - 31).averify(token)
    assert caught.value.reason == "not_yet_valid"


async def test_an_unknown_kid_refetches_the_jwks_at_most_once_a_minute(grantd: ServerProcess) -> None:
    token, _ = await user_token(grantd)
    _, claims = segments(token)
    fetched: list[str] = []

    class Counting(TokenVerifier):
        async def _aget_json(self, url: str) -> Any:
            fetched.append(url)
            return await super()._aget_json(url)

    verifier = Counting(grantd.base_url)
    await verifier.averify(token)
    assert fetched == [f"{grantd.base_url}/.well-known/oauth-authorization-server", f"{grantd.base_url}/.well-known/jwks.json"]
    for _ in range(3):
        await verifier.averify(token)
    assert len(fetched) == 2, "known keys are not fetched again"
    for _ in range(20):
        with pytest.raises(InvalidTokenError):
            await verifier.averify(sign_es256(claims, str(uuid.uuid4())))
    assert len(fetched) == 3, "twenty unknown kids in a minute cause one refetch"
    await verifier.averify(token)  # the known key still works
    assert len(fetched) == 3


def test_a_token_verified_before_skips_only_its_signature(grantd: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token presented again is not checked for its signature again (the costly part), yet its
    time is checked again, and what the caller did to the claims it was given does not stick."""
    token = asyncio.run(user_token(grantd))[0]
    _, claims = segments(token)
    signature_checks: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda token, *a, **k: signature_checks.append(token) or decode(token, *a, **k))
    now = [float(claims["iat"])]
    verifier = TokenVerifier(grantd.base_url, clock=lambda: now[0])

    first = verifier.verify(token)
    first.claims["permissions"].append("admin")
    again = verifier.verify(token)
    assert again.jti == claims["jti"] and again.permissions == tuple(claims["permissions"])
    assert again.claims["permissions"] == claims["permissions"], "the claims handed out are the caller's own copy"
    assert signature_checks == [token], "the second verify did not check the signature again"

    now[0] = claims["exp"] + 31
    with pytest.raises(InvalidTokenError) as caught:
        verifier.verify(token)
    assert caught.value.reason == "expired"

    uncached = TokenVerifier(grantd.base_url, cache_size=0)
    uncached.verify(token)
    uncached.verify(token)
    assert signature_checks.count(token) == 3, "cache_size=0 checks every time"


def test_the_verified_tokens_remembered_are_bounded_oldest_first(grantd: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [asyncio.run(user_token(grantd))[0] for _ in range(3)]
    signature_checks: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda token, *a, **k: signature_checks.append(token) or decode(token, *a, **k))
    verifier = TokenVerifier(grantd.base_url, cache_size=2)
    for token in tokens:
        verifier.verify(token)
    verifier.verify(tokens[2])
    verifier.verify(tokens[1])
    assert signature_checks == tokens, "the two newest are remembered"
    verifier.verify(tokens[0])
    assert signature_checks == [*tokens, tokens[0]], "the oldest was forgotten"


def test_negative_settings_are_refused() -> None:
    for setting in ({"leeway": -1}, {"introspection_cache_ttl": -1}, {"jwks_max_age": 0}, {"min_refetch_interval": -1}, {"cache_size": -1}):
        with pytest.raises(ValueError):
            TokenVerifier("https://issuer.example", **setting)


def test_a_remembered_token_goes_with_its_key(tmp_path: Path) -> None:
    """When the JWKS is read again, a token whose key has left it, or whose kid now names
    another key, is refused: remembering a signature never outlives the key that made it."""
    issuer = "https://issuer.example"
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {"iss": issuer, "aud": issuer, "sub": "app", "client_id": "app", "jti": "j1", "scope": "", "iat": now, "exp": now + 600}
    token = sign_es256(claims, "k1", key)

    def jwk_of(private: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
        return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": kid, "alg": "ES256", "use": "sig"}

    published = {"keys": [jwk_of(key, "k1")]}
    app = Starlette(routes=[Route("/jwks", lambda request: JSONResponse(published))])
    with serve(app) as base:
        verifier = TokenVerifier(issuer, jwks_uri=f"{base}/jwks", jwks_max_age=0.2)
        assert verifier.verify(token).jti == "j1"
        assert verifier.verify(token).jti == "j1"

        new_key = ec.generate_private_key(ec.SECP256R1())
        published = {"keys": [jwk_of(new_key, "k1")]}  # the same kid, another key
        time.sleep(0.3)
        # Another token makes the verifier read the JWKS again; then the remembered one comes back.
        assert verifier.verify(sign_es256({**claims, "jti": "j2"}, "k1", new_key)).jti == "j2"
        with pytest.raises(InvalidTokenError) as caught:
            verifier.verify(token)
        assert caught.value.reason == "bad_signature"

        published = {"keys": [jwk_of(key, "k2")]}  # k1 gone
        time.sleep(0.3)
        with pytest.raises(InvalidTokenError) as caught:
            verifier.verify(token)
        assert caught.value.reason == "unknown_key"


async def test_an_unreachable_issuer_is_unavailable_not_invalid(grantd: ServerProcess) -> None:
    token, _ = await user_token(grantd)
    dead = f"http://127.0.0.1:{free_port()}"
    verifier = TokenVerifier(grantd.base_url, discovery_url=f"{dead}/.well-known/oauth-authorization-server", timeout=2)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.averify(token)
    assert caught.value.reason == "unavailable"
    with serve(profile_api.create_app(verifier)) as api:
        response = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 503 and response.headers["retry-after"]


# ---------------------------------------------------------------- the example resource server


async def test_the_example_api_answers_by_permission(grantd: ServerProcess) -> None:
    read_write, flow = await user_token(grantd)
    read_only, _ = await user_token(grantd, "read_profile")
    with serve(profile_api.create_app(TokenVerifier(grantd.base_url))) as api:
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            me = await client.get("/me", headers={"Authorization": f"Bearer {read_write}"})
            assert me.status_code == 200, me.text
            assert me.json()["user_id"] == flow.user_id and me.json()["app_id"] == flow.app_id
            assert me.json()["permissions"] == ["read_profile", "write_data"]

            put = await client.put("/me/data", json={"theme": "dark"}, headers={"Authorization": f"Bearer {read_write}"})
            assert put.status_code == 200 and put.json()["data"] == {"theme": "dark"}
            assert (await client.get("/me", headers={"Authorization": f"Bearer {read_write}"})).json()["data"] == {"theme": "dark"}

            # A valid token without write_data: 403 insufficient_scope naming the permission needed.
            denied = await client.put("/me/data", json={"x": 1}, headers={"Authorization": f"Bearer {read_only}"})
            assert denied.status_code == 403
            challenge = bearer_challenge(denied)
            assert challenge["realm"] == grantd.base_url  # the verifier's audience
            assert challenge["error"] == "insufficient_scope" and challenge["scope"] == "write_data"
            assert denied.json()["detail"]["error"] == "insufficient_scope"
            assert (await client.get("/me", headers={"Authorization": f"Bearer {read_only}"})).status_code == 200

            # No bearer token at all (none, no scheme, another scheme, Bearer alone): 401 with the
            # bare challenge, no error code (RFC 6750 §3.1).
            for headers in (
                {},
                {"Authorization": read_write},
                {"Authorization": f"Basic {read_write}"},
                {"Authorization": "Bearer"},
            ):
                for method, path in (("GET", "/me"), ("PUT", "/me/data")):
                    refused = await client.request(method, path, headers=headers, json={})
                    assert refused.status_code == 401, (headers, refused.text)
                    assert parse_challenges(www_authenticate(refused)) == bare_challenges(grantd.base_url), refused.headers
                    assert refused.json()["detail"]["error"] == "invalid_token"

            # A tampered token, alg none, HS256 keyed with the public key, two tokens: 401 invalid_token.
            kid = jwt.get_unverified_header(read_write)["kid"]
            escalated = forge(read_only, claims={"permissions": ["read_profile", "write_data"]})
            alg_none = f"{b64(json.dumps({'alg': 'none', 'typ': 'at+jwt', 'kid': kid}).encode())}.{escalated.split('.')[1]}."
            for headers in (
                {"Authorization": f"Bearer {escalated}"},
                {"Authorization": f"Bearer {alg_none}"},
                {"Authorization": f"Bearer {hs256(escalated, public_key_pem(grantd, read_only))}"},
                {"Authorization": f"Bearer {read_only} {read_write}"},
            ):
                for method, path in (("GET", "/me"), ("PUT", "/me/data")):
                    refused = await client.request(method, path, headers=headers, json={})
                    assert refused.status_code == 401, (headers, refused.text)
                    challenge = bearer_challenge(refused)
                    assert challenge["realm"] == grantd.base_url and challenge["error"] == "invalid_token", refused.headers
                    assert challenge["error_description"] == refused.json()["detail"]["error_description"]
            assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("case", ["wrong audience", "wrong issuer", "expired"])
async def test_the_example_api_refuses_tokens_not_meant_for_it(grantd: ServerProcess, case: str) -> None:
    token, _ = await user_token(grantd)
    verifier = {
        "wrong audience": TokenVerifier(grantd.base_url, audience="https://profile-api.example"),
        "wrong issuer": TokenVerifier("https://auth.other.example", jwks_uri=f"{grantd.base_url}/.well-known/jwks.json"),
        "expired": TokenVerifier(grantd.base_url, clock=lambda: time.time() + 3600 + 31),
    }[case]
    with serve(profile_api.create_app(verifier)) as api:
        response = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 401
    assert bearer_challenge(response)["error"] == "invalid_token"


async def test_the_starlette_middleware_guards_a_whole_app(grantd: ServerProcess) -> None:
    read_only, flow = await user_token(grantd, "read_profile")

    async def whoami(request: Request) -> JSONResponse:
        token: AccessToken = request.state.access_token
        return JSONResponse({"user_id": token.user_id})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def app(permissions: list[str]) -> Starlette:
        application = Starlette(routes=[Route("/whoami", whoami), Route("/healthz", health)])
        application.add_middleware(
            RequirePermissionsMiddleware, verifier=TokenVerifier(grantd.base_url), permissions=permissions, exclude=["/healthz"]
        )
        return application

    with serve(app(["read_profile"])) as reader, serve(app(["read_profile", "write_data"])) as writer:
        ok = httpx.get(f"{reader}/whoami", headers={"Authorization": f"Bearer {read_only}"}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"user_id": flow.user_id}
        missing = httpx.get(f"{reader}/whoami", timeout=10)
        assert missing.status_code == 401 and missing.json()["error"] == "invalid_token"
        assert parse_challenges(www_authenticate(missing)) == bare_challenges(grantd.base_url)  # no error code (RFC 6750 §3.1)
        bad = httpx.get(f"{reader}/whoami", headers={"Authorization": f"Bearer {read_only}x"}, timeout=10)
        assert bad.status_code == 401 and bearer_challenge(bad)["error"] == "invalid_token"
        assert httpx.get(f"{reader}/healthz", timeout=10).status_code == 200
        denied = httpx.get(f"{writer}/whoami", headers={"Authorization": f"Bearer {read_only}"}, timeout=10)
        assert denied.status_code == 403 and denied.json()["error"] == "insufficient_scope"
        assert bearer_challenge(denied)["error"] == "insufficient_scope"
        assert bearer_challenge(denied)["scope"] == "read_profile write_data"


# ---------------------------------------------------------------- key rotation and revocation


async def test_no_request_fails_across_a_signing_key_rotation(
    tmp_path: Path, secret_key: str, server_factory: Callable[..., ServerProcess]
) -> None:
    """grantd rotates its signing key (`--delay 0`: the new key signs at once) while a resource
    server keeps verifying fresh tokens and old ones: every request succeeds, and the resource
    server learns the new key from the JWKS by itself."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'rotation.db'}"
    server = server_factory(database_url, env={"GRANTD_SIGNING_KEY_RELOAD_INTERVAL": "1"})
    first_token, flow = await user_token(server)
    old_kid = jwt.get_unverified_header(first_token)["kid"]
    statuses: list[int] = []
    kids: list[str] = []
    with serve(profile_api.create_app(TokenVerifier(server.base_url))) as api:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as issuer, httpx.AsyncClient(
            base_url=api, timeout=30
        ) as resource:
            flow.client = issuer

            async def one_round() -> str:
                token = (await flow.redeem(await flow.code(permissions="read_profile,write_data"))).json()["data"]["access_token"]
                # Several at once: those arriving while the resource server re-reads the JWKS wait for it.
                responses = await asyncio.gather(
                    *(resource.get("/me", headers={"Authorization": f"Bearer {bearer}"}) for bearer in [token] * 4 + [first_token])
                )
                statuses.extend(response.status_code for response in responses)
                kids.append(jwt.get_unverified_header(token)["kid"])
                return kids[-1]

            for _ in range(5):
                await one_round()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("GRANTD_")},
                "GRANTD_DATABASE_URL": database_url,
                "GRANTD_SECRET_KEY": secret_key,
                "GRANTD_DATA_DIR": str(tmp_path),
                "GRANTD_ISSUER": server.base_url,
            }
            rotate = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "grantd", "signing-keys", "rotate", "--delay", "0", "--json",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            while rotate.returncode is None:  # keep the traffic going while the rotation runs
                await one_round()
                try:
                    await asyncio.wait_for(rotate.wait(), 0.01)
                except TimeoutError:
                    pass
            out, err = await rotate.communicate()
            assert rotate.returncode == 0, err.decode()
            new_kid = next(k["kid"] for k in json.loads(out)["keys"] if k["algorithm"] == "ES256")
            deadline = time.monotonic() + 20
            while kids[-1] != new_kid or kids.count(new_kid) < 5:
                assert time.monotonic() < deadline, f"grantd never signed with {new_kid}; kids seen: {set(kids)}"
                await one_round()
    assert old_kid != new_kid and {old_kid, new_kid} <= set(kids)
    assert set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} of {len(statuses)} requests failed"


async def test_online_mode_sees_a_revocation_at_once(grantd: ServerProcess) -> None:
    token, flow = await user_token(grantd)
    credentials = (flow.app_id, flow.key_secret)
    online = TokenVerifier(grantd.base_url, introspection=credentials, introspection_cache_ttl=0)
    cached = TokenVerifier(grantd.base_url, introspection=credentials, introspection_cache_ttl=60)
    offline = TokenVerifier(grantd.base_url)
    with serve(profile_api.create_app(online)) as api:
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api}/me", headers=headers, timeout=10).status_code == 200
        await cached.averify(token)

        revoked = httpx.post(f"{grantd.base_url}/oauth2/revoke", data={"token": token}, auth=credentials, timeout=10)
        assert revoked.status_code == 200

        refused = httpx.get(f"{api}/me", headers=headers, timeout=10)
        assert refused.status_code == 401 and bearer_challenge(refused)["error"] == "invalid_token"
        assert refused.json()["detail"]["error_description"] == "The access token was revoked."
    with pytest.raises(InvalidTokenError) as caught:
        await asyncio.to_thread(online.verify, token)
    assert caught.value.reason == "inactive"
    # The trade-offs, as documented: a cached answer holds for its time; offline mode never asks.
    assert (await cached.averify(token)).jti == (await offline.averify(token)).jti


# ---------------------------------------------------------------- the README


def readme_block(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {name}:start -->\s*```sh\n(.*?)```\s*<!-- {name}:end -->", readme, re.S)
    assert block, f"README.md has no {name} block"
    return block.group(1)


def test_the_readme_calls_the_example_api_with_the_walkthroughs_token(grantd: ServerProcess, tmp_path: Path) -> None:
    port = free_port()
    log = open(tmp_path / "profile_api.log", "wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "profile_api:app", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "GRANTD_ISSUER": grantd.base_url},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", api, tmp_path / "profile_api.log", seconds=20, what="uvicorn")
        script = readme_block("walkthrough") + readme_block("resource-server")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env={**os.environ, "BASE": grantd.base_url, "API": f"http://127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        api.terminate()
        api.wait(10)
        log.close()
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    me = json.loads(next(line for line in lines if line.startswith('{"user_id"')))
    assert me["permissions"] == ["read_profile", "write_data"]
    assert any(line.startswith("HTTP/1.1 401") for line in lines), result.stdout
    # Without a token: the bare challenge, no error code (RFC 6750 §3.1).
    challenges = [line for line in lines if line.lower().startswith("www-authenticate:")]
    assert challenges, result.stdout
    for line in challenges:
        assert parse_challenges(line.split(":", 1)[1].strip()) == bare_challenges(grantd.base_url), line
