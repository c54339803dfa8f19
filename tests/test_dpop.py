"""DPoP (RFC 9449) against a real `grantd serve`: tokens bound to the client's key at the token
endpoint (every grant), at UserInfo and in introspection; codes bound by ``dpop_jkt`` and by a
proof at ``/oauth2/par``; refresh tokens of public clients bound; the per-app "require DPoP"; the
server's nonces; and one test per MUST of §4.3 and §11 (each proof built with PyJWT and
cryptography, its thumbprint computed by RFC 7638's own recipe: tests/support/dpop.py). Across processes, a replayed
proof is refused by the other process: on PostgreSQL (``-m db``) and through Redis.

openid-client and requests-oauth2client against a real server: tests/test_interop_dpop.py."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from acting_user import developer, new_app
from grantd.config import Settings
from grantd.core import dpop as core_dpop
from grantd.crypto.secrets import SecretHasher
from support.dpop import Holder, claims_of, code_for, pkce, redeem
from support.interop import consent
from support.neucron import Flow
from support.servers import ServerProcess, server_on_new_sqlite, start_server

pytestmark = pytest.mark.db

ALGORITHMS = ["ES256", "EdDSA", "RS256", "PS256"]


def refused(response: httpx.Response, error: str = "invalid_dpop_proof", status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    return body


@pytest.fixture(scope="module")
def server(database_url: str, secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `grantd serve` on the session's database (PostgreSQL with GRANTD_TEST_DB=postgres)."""
    started = start_server(database_url, secret_key, tmp_path_factory.mktemp("dpop"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def base(server: ServerProcess) -> str:
    return server.base_url


@pytest.fixture(scope="module")
async def dev(server: ServerProcess) -> AsyncIterator[Flow]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        yield await developer(http)


@pytest.fixture
async def app(dev: Flow) -> Flow:
    return await new_app(dev, client_type="confidential")


@pytest.fixture
async def public_app(dev: Flow) -> Flow:
    return await new_app(dev, client_type="public")


async def credentials(app: Flow, proof: str | list[str] | None, **form: str) -> httpx.Response:
    headers = [("DPoP", value) for value in ([proof] if isinstance(proof, str) else proof or [])]
    return await app.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", **form}, auth=(app.app_id, app.key_secret),
        headers=httpx.Headers(headers),
    )


def as_public(app: Flow) -> Flow:
    app.key_secret = ""  # a public client sends only its client_id
    return app


# ---------------------------------------------------------------- §5, §6: bound tokens


async def test_discovery_lists_the_proof_algorithms(app: Flow) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        document = (await app.client.get(path)).json()
        assert document["dpop_signing_alg_values_supported"] == ALGORITHMS


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_client_credentials_token_is_bound_to_the_proof_key(app: Flow, base: str, alg: str) -> None:
    holder = Holder(alg)
    response = await credentials(app, holder.proof("POST", f"{base}/oauth2/token"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": holder.jkt}
    assert "dpop-nonce" not in response.headers  # nonces are off by default
    # §6.2: introspection says so too.
    answer = (await app.client.post("/oauth2/introspect", data={"token": body["access_token"]}, auth=(app.app_id, app.key_secret))).json()
    assert answer["active"] is True and answer["token_type"] == "DPoP" and answer["cnf"] == {"jkt": holder.jkt}


async def test_without_a_proof_the_token_is_a_bearer_token(app: Flow) -> None:
    response = await credentials(app, None)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer" and "cnf" not in claims_of(response.json()["access_token"])
    answer = (await app.client.post("/oauth2/introspect", data={"token": response.json()["access_token"]}, auth=(app.app_id, app.key_secret))).json()
    assert answer["token_type"] == "Bearer" and "cnf" not in answer


async def test_code_with_pkce_then_userinfo_with_a_bound_token(app: Flow, base: str) -> None:
    holder = Holder()
    code, verifier = await code_for(app, base)
    response = await redeem(app, base, code, verifier, holder.proof("POST", f"{base}/oauth2/token"))
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "DPoP" and claims_of(tokens["access_token"])["cnf"]["jkt"] == holder.jkt
    token, url = tokens["access_token"], f"{base}/oauth2/userinfo"
    # §7: Authorization: DPoP, and a proof with ath.
    got = await app.client.get("/oauth2/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": holder.proof("GET", url, token=token)})
    assert got.status_code == 200, got.text
    assert got.json()["sub"]
    got = await app.client.post("/oauth2/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": holder.proof("POST", url, token=token)})
    assert got.status_code == 200, got.text
    # A confidential client's refresh token is bound to its authentication, not to the key (§5).
    response = await app.client.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=(app.app_id, app.key_secret)
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


def dpop_challenge(response: httpx.Response, error: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('DPoP algs="ES256 EdDSA RS256 PS256"'), challenge
    assert f'error="{error}"' in challenge, challenge
    assert response.json()["error"] == error


async def test_userinfo_musts(app: Flow, base: str) -> None:
    holder = Holder()
    code, verifier = await code_for(app, base)
    token = (await redeem(app, base, code, verifier, holder.proof("POST", f"{base}/oauth2/token"))).json()["access_token"]
    url = f"{base}/oauth2/userinfo"

    async def userinfo(proof: str | None, scheme: str = "DPoP") -> httpx.Response:
        return await app.client.get("/oauth2/userinfo", headers={"Authorization": f"{scheme} {token}", **({"DPoP": proof} if proof else {})})

    # §4.3 item 12: ath missing, or of another token.
    dpop_challenge(await userinfo(holder.proof("GET", url)), "invalid_dpop_proof")
    dpop_challenge(await userinfo(holder.proof("GET", url, token=token + "x")), "invalid_dpop_proof")
    # No proof at all with the DPoP scheme.
    dpop_challenge(await userinfo(None), "invalid_dpop_proof")
    # A proof by another key than the token's.
    dpop_challenge(await userinfo(Holder().proof("GET", url, token=token)), "invalid_token")
    # §7.2: the bound token as a bearer token.
    response = await userinfo(None, "Bearer")
    assert response.status_code == 401 and response.json()["error"] == "invalid_token", response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="grantd", error="invalid_token"')
    assert 'DPoP algs="ES256 EdDSA RS256 PS256"' in response.headers["www-authenticate"]
    # A replayed proof at the resource.
    proof = holder.proof("GET", url, token=token)
    assert (await userinfo(proof)).status_code == 200
    dpop_challenge(await userinfo(proof), "invalid_dpop_proof")
    # htm of the resource request.
    dpop_challenge(await userinfo(holder.proof("POST", url, token=token)), "invalid_dpop_proof")
    # Neucron's user info takes bearer tokens only: a bound one is refused there too.
    neucron = await app.client.get("/auth/user/info", headers={"Authorization": f"Bearer {token}"})
    assert neucron.status_code == 401, neucron.text
        # No token: both challenges (§7.1).
    response = await app.client.get("/oauth2/userinfo")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="grantd", DPoP algs="ES256 EdDSA RS256 PS256"'


async def test_a_bearer_token_is_not_accepted_with_the_dpop_scheme(app: Flow, base: str) -> None:
    code, verifier = await code_for(app, base)
    token = (await redeem(app, base, code, verifier, None)).json()["access_token"]
    url = f"{base}/oauth2/userinfo"
    assert (await app.client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    response = await app.client.get("/oauth2/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": Holder().proof("GET", url, token=token)})
    dpop_challenge(response, "invalid_token")


# ---------------------------------------------------------------- §4.3, §11: each MUST of the proof


async def test_a_replayed_proof_is_refused(app: Flow, base: str) -> None:
    proof = Holder().proof("POST", f"{base}/oauth2/token")
    assert (await credentials(app, proof)).status_code == 200
    refused(await credentials(app, proof))


async def test_wrong_htu_and_htm_are_refused(app: Flow, base: str) -> None:
    holder = Holder()
    refused(await credentials(app, holder.proof("POST", f"{base}/oauth2/introspect")))
    refused(await credentials(app, holder.proof("POST", "https://elsewhere.example/oauth2/token")))
    refused(await credentials(app, holder.proof("GET", f"{base}/oauth2/token")))
    refused(await credentials(app, holder.proof("post", f"{base}/oauth2/token")))
    # §4.3 item 9: the query and fragment are not part of htu; scheme and host compare in any case.
    assert (await credentials(app, holder.proof("POST", f"{base}/oauth2/token?x=1#f"))).status_code == 200
    assert (await credentials(app, holder.proof("POST", f"{base.upper()}/oauth2/token"))).status_code == 200


async def test_a_proof_not_signed_by_its_jwk_is_refused(app: Flow, base: str) -> None:
    other = Holder()
    refused(await credentials(app, Holder().proof("POST", f"{base}/oauth2/token", key=other.private)))


async def test_stale_and_future_iat_are_refused(app: Flow, base: str) -> None:
    holder, url = Holder(), f"{base}/oauth2/token"
    refused(await credentials(app, holder.proof("POST", url, iat=int(time.time()) - 3600)))
    refused(await credentials(app, holder.proof("POST", url, iat=int(time.time()) + 3600)))
    refused(await credentials(app, holder.proof("POST", url, iat="now")))


async def test_a_private_key_in_jwk_is_refused(app: Flow, base: str) -> None:
    holder = Holder()
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(holder.private))
    assert "d" in private_jwk
    body = refused(await credentials(app, holder.proof("POST", f"{base}/oauth2/token", header={"jwk": private_jwk})))
    assert "private" in body["error_description"]


async def test_symmetric_and_unsigned_proofs_are_refused(app: Flow, base: str) -> None:
    holder, url = Holder(), f"{base}/oauth2/token"
    refused(await credentials(app, holder.proof("POST", url, key="a shared secret of 32 bytes......", alg="HS256")))
    body = {"jti": secrets.token_hex(8), "htm": "POST", "htu": url, "iat": int(time.time())}
    unsigned = jwt.encode(body, None, algorithm="none", headers={"typ": "dpop+jwt", "jwk": holder.jwk})  # type: ignore[arg-type]
    refused(await credentials(app, unsigned))
    # ES256 with an RSA key in jwk.
    refused(await credentials(app, Holder("RS256").proof("POST", url, key=holder.private, alg="ES256")))


async def test_bad_typ_missing_claims_and_garbage_are_refused(app: Flow, base: str) -> None:
    holder, url = Holder(), f"{base}/oauth2/token"
    refused(await credentials(app, holder.proof("POST", url, header={"typ": "JWT"})))
    for claim in ("jti", "htm", "htu", "iat"):
        refused(await credentials(app, holder.proof("POST", url, **{claim: None})))
    refused(await credentials(app, "not.a.jwt"))
    refused(await credentials(app, "x" * 9000))
    # §4.3 item 1: one DPoP header only.
    refused(await credentials(app, [holder.proof("POST", url), holder.proof("POST", url)]))


# ---------------------------------------------------------------- §10: dpop_jkt binds the code


async def test_dpop_jkt_binds_the_code(app: Flow, base: str) -> None:
    holder = Holder()
    code, verifier = await code_for(app, base, dpop_jkt=holder.jkt)
    refused(await redeem(app, base, code, verifier, None), "invalid_grant")
    refused(await redeem(app, base, code, verifier, Holder().proof("POST", f"{base}/oauth2/token")), "invalid_grant")
    # Refused before it was spent: the right key still redeems it.
    response = await redeem(app, base, code, verifier, holder.proof("POST", f"{base}/oauth2/token"))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"]["jkt"] == holder.jkt


async def test_a_malformed_dpop_jkt_is_refused_at_the_redirect_uri(app: Flow, base: str) -> None:
    query = {"response_type": "code", "client_id": app.app_id, "redirect_uri": app.redirect_uri, "state": "s", "dpop_jkt": "short"}
    location = await consent(app, f"{base}/oauth2/authorize?{urlencode(query)}")
    got = parse_qs(urlsplit(location).query)
    assert got["error"] == ["invalid_request"] and "dpop_jkt" in got["error_description"][0], location


async def test_a_proof_at_par_binds_the_code(app: Flow, base: str) -> None:
    holder = Holder()
    verifier, challenge = pkce()
    params = {"response_type": "code", "redirect_uri": app.redirect_uri, "scope": "read_profile", "state": "s",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    # §10.1: a dpop_jkt beside the proof must name the proof's key.
    response = await app.client.post(
        "/oauth2/par", data={**params, "dpop_jkt": Holder().jkt}, auth=(app.app_id, app.key_secret),
        headers={"DPoP": holder.proof("POST", f"{base}/oauth2/par")},
    )
    refused(response)
    refused(await app.client.post("/oauth2/par", data=params, auth=(app.app_id, app.key_secret),
                                  headers={"DPoP": holder.proof("POST", f"{base}/oauth2/token")}))
    response = await app.client.post(
        "/oauth2/par", data=params, auth=(app.app_id, app.key_secret), headers={"DPoP": holder.proof("POST", f"{base}/oauth2/par")}
    )
    assert response.status_code == 201, response.text
    url = f"{base}/oauth2/authorize?" + urlencode({"client_id": app.app_id, "request_uri": response.json()["request_uri"]})
    code = parse_qs(urlsplit(await consent(app, url)).query)["code"][0]
    refused(await redeem(app, base, code, verifier, Holder().proof("POST", f"{base}/oauth2/token")), "invalid_grant")
    response = await redeem(app, base, code, verifier, holder.proof("POST", f"{base}/oauth2/token"))
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"


# ---------------------------------------------------------------- §5: a public client's refresh token


async def test_a_public_clients_refresh_token_is_bound(public_app: Flow, base: str) -> None:
    app, holder = as_public(public_app), Holder()
    code, verifier = await code_for(app, base)
    response = await redeem(app, base, code, verifier, holder.proof("POST", f"{base}/oauth2/token"))
    assert response.status_code == 200, response.text
    refresh = {"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"], "client_id": app.app_id}
    refused(await app.client.post("/oauth2/token", data=refresh), "invalid_grant")
    refused(await app.client.post("/oauth2/token", data=refresh, headers={"DPoP": Holder().proof("POST", f"{base}/oauth2/token")}), "invalid_grant")
    response = await app.client.post("/oauth2/token", data=refresh, headers={"DPoP": holder.proof("POST", f"{base}/oauth2/token")})
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP" and claims_of(response.json()["access_token"])["cnf"]["jkt"] == holder.jkt
    # The rotated token presented again within the grace window: without the key's proof it proves
    # nothing (refused, the family kept); with it, the same successor.
    refused(await app.client.post("/oauth2/token", data=refresh), "invalid_grant")
    again = await app.client.post("/oauth2/token", data=refresh, headers={"DPoP": holder.proof("POST", f"{base}/oauth2/token")})
    assert again.status_code == 200, again.text
    assert again.json()["refresh_token"] == response.json()["refresh_token"]
        # The successor is bound to the same key.
    successor = {**refresh, "refresh_token": response.json()["refresh_token"]}
    refused(await app.client.post("/oauth2/token", data=successor), "invalid_grant")
    response = await app.client.post("/oauth2/token", data=successor, headers={"DPoP": holder.proof("POST", f"{base}/oauth2/token")})
    assert response.status_code == 200, response.text


async def test_a_public_client_that_starts_using_dpop_at_a_refresh_binds_the_successor(public_app: Flow, base: str) -> None:
    app, holder = as_public(public_app), Holder()
    code, verifier = await code_for(app, base)
    response = await redeem(app, base, code, verifier, None)
    assert response.status_code == 200 and response.json()["token_type"] == "Bearer", response.text
    refresh = {"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"], "client_id": app.app_id}
    response = await app.client.post("/oauth2/token", data=refresh, headers={"DPoP": holder.proof("POST", f"{base}/oauth2/token")})
    assert response.status_code == 200 and response.json()["token_type"] == "DPoP", response.text
    successor = {**refresh, "refresh_token": response.json()["refresh_token"]}
    refused(await app.client.post("/oauth2/token", data=successor), "invalid_grant")
    response = await app.client.post("/oauth2/token", data=successor, headers={"DPoP": holder.proof("POST", f"{base}/oauth2/token")})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- §5.2: dpop_bound_access_tokens


async def test_an_app_that_requires_dpop(dev: Flow, base: str) -> None:
    app = await new_app(dev, client_type="confidential", dpop_bound_access_tokens=True)
    shown = (await app.client.get(f"/v1/apps/{app.app_id}", headers={"Authorization": app.dev_token})).json()["data"]
    assert shown["dpop_bound_access_tokens"] is True
    body = refused(await credentials(app, None))
    assert "DPoP" in body["error_description"]
    assert (await credentials(app, Holder().proof("POST", f"{base}/oauth2/token"))).status_code == 200
    # A code of the Neucron dialect (which cannot send a proof) is refused at /oauth/token, and not spent.
    code = await app.code()
    response = await app.redeem(code)
    assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof", response.text
    # Turned off again: bearer tokens.
    response = await app.client.patch(f"/v1/apps/{app.app_id}", json={"dpop_bound_access_tokens": False}, headers={"Authorization": app.dev_token})
    assert response.status_code == 200 and response.json()["data"]["dpop_bound_access_tokens"] is False
    assert (await credentials(app, None)).status_code == 200
    response = await app.client.patch(f"/v1/apps/{app.app_id}", json={"dpop_bound_access_tokens": "yes"}, headers={"Authorization": app.dev_token})
    assert response.status_code == 400 and "dpop_bound_access_tokens" in response.json()["message"], response.text


# ---------------------------------------------------------------- §8, §9: nonces


async def test_nonces_when_the_server_requires_them(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str, settings: Settings
) -> None:
    with server_on_new_sqlite(tmp_path_factory, secret_key, "dpop-nonce", env={"GRANTD_DPOP_NONCE": "true"}) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            app = await new_app(await developer(http), client_type="confidential")
            holder, token_url = Holder(), f"{server.base_url}/oauth2/token"
            # §8.2: the nonces rotate each window. The server's own nonce function, under the same
            # master secret, makes the nonce of any window; near a window's end, wait for the next one.
            if time.time() % core_dpop.NONCE_WINDOW > core_dpop.NONCE_WINDOW - 5:
                time.sleep(core_dpop.NONCE_WINDOW - time.time() % core_dpop.NONCE_WINDOW + 0.1)
            now, maker = int(time.time()), SimpleNamespace(hasher=SecretHasher(settings.master_secret))
            current, previous, two_back = (
                core_dpop.nonce(maker, now - windows * core_dpop.NONCE_WINDOW) for windows in (0, 1, 2)  # type: ignore[arg-type]
            )
            for accepted in (current, previous):
                response = await credentials(app, holder.proof("POST", token_url, nonce=accepted))
                assert response.status_code == 200, response.text
                assert response.headers["dpop-nonce"] == current
            response = await credentials(app, holder.proof("POST", token_url, nonce=two_back))
            refused(response, "use_dpop_nonce")
            assert response.headers["dpop-nonce"] == current  # the fresh nonce to use
            # §8: a proof without the server's nonce, or with one not of the server's, gets use_dpop_nonce and a nonce.
            response = await credentials(app, holder.proof("POST", token_url))
            refused(response, "use_dpop_nonce")
            nonce = response.headers["dpop-nonce"]
            refused(await credentials(app, holder.proof("POST", token_url, nonce="a-nonce-of-our-own")), "use_dpop_nonce")
            response = await credentials(app, holder.proof("POST", token_url, nonce=nonce))
            assert response.status_code == 200, response.text
            assert response.headers["dpop-nonce"] == nonce  # every answer to a DPoP request brings the current one
            code, verifier = await code_for(app, server.base_url)
            token = (await redeem(app, server.base_url, code, verifier, holder.proof("POST", token_url, nonce=nonce))).json()["access_token"]
            url = f"{server.base_url}/oauth2/userinfo"
            response = await http.get("/oauth2/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": holder.proof("GET", url, token=token)})
            dpop_challenge(response, "use_dpop_nonce")
            fresh = response.headers["dpop-nonce"]
            response = await http.get(
                "/oauth2/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": holder.proof("GET", url, token=token, nonce=fresh)}
            )
            assert response.status_code == 200, response.text
            assert response.headers["dpop-nonce"]


# ---------------------------------------------------------------- §11.1: replays across processes


async def replayed_across(servers: list[ServerProcess]) -> None:
    """A proof accepted by the first process is refused by the second (one deployment, one issuer)."""
    issuer = servers[0].base_url
    async with httpx.AsyncClient(base_url=issuer, timeout=10) as first, httpx.AsyncClient(base_url=servers[1].base_url, timeout=10) as second:
        app = await new_app(await developer(first), client_type="confidential")
        proof = Holder().proof("POST", f"{issuer}/oauth2/token")
        assert (await credentials(app, proof)).status_code == 200
        app.client = second
        refused(await credentials(app, proof))
        assert (await credentials(app, Holder().proof("POST", f"{issuer}/oauth2/token"))).status_code == 200


async def test_a_replay_is_refused_by_another_process_on_postgresql(
    deployment: Callable[..., list[ServerProcess]], postgres_url: str
) -> None:
    await replayed_across(deployment(postgres_url))


async def test_with_redis_the_proofs_are_kept_in_redis(deployment: Callable[..., list[ServerProcess]], tmp_path: Path) -> None:
    import sqlite3

    import redis

    connection = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        connection.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis does not answer at 127.0.0.1:6379: {exc}")
    prefix = f"grantd-test-{secrets.token_hex(6)}:"
    database = tmp_path / "redis-replays.db"
    env = {"GRANTD_REDIS_URL": "redis://127.0.0.1:6379/0", "GRANTD_REDIS_KEY_PREFIX": prefix}
    try:
        await replayed_across(deployment(f"sqlite+aiosqlite:///{database}", env=env))
        keys = connection.keys(f"{prefix}dpop:*")
        assert len(keys) == 2  # the two proofs accepted, each with its expiry
        assert all(0 < connection.ttl(key) <= 360 for key in keys)
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT count(*) FROM dpop_proof_jtis").fetchone() == (0,)
    finally:
        for key in connection.scan_iter(f"{prefix}*"):
            connection.delete(key)
        connection.close()
