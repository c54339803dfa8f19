"""The FAPI 2.0 security profile (``security_profile: fapi2``) against a real `grantd serve`: an app
under it is authorized only through a pushed request (RFC 9126) with PKCE S256, authenticates with
private_key_jwt whose assertions name the issuer alone as ``aud``, gets codes that live at most
60 seconds and an ``iss`` in every authorization response, and keeps its refresh token on a refresh.
Another private_key_jwt app, on the same server, keeps the ordinary rules (an endpoint URL as aud,
5-minute codes, rotation).

A code redeemed 61 seconds on is judged on the in-process app, whose clock the test moves (the
real server's clock cannot be moved); the real server shows the code's stored lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acting_user import ActingUser, new_app
from support.neucron import PASSWORD, Flow, new_flow
from support.servers import ServerProcess

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REDIRECT_URI = "https://app.example.com/callback"


def public_jwk(private: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": kid, "use": "sig"}


def assertion(private: ec.EllipticCurvePrivateKey, client_id: str, aud: Any) -> dict[str, str]:
    """The form fields of a private_key_jwt client authentication, signed now, with ``aud``."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": secrets.token_hex(12)}
    signed = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
    return {"client_assertion_type": JWT_BEARER, "client_assertion": signed}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT_URI + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


class App:
    """An app registered on the server for private_key_jwt, with its private key."""

    def __init__(self, flow: Flow, key: ec.EllipticCurvePrivateKey, issuer: str) -> None:
        self.flow, self.key, self.issuer = flow, key, issuer
        self.client_id = flow.app_id

    def auth(self, aud: Any = None) -> dict[str, str]:
        return assertion(self.key, self.client_id, self.issuer if aud is None else aud)

    async def push(self, http: httpx.AsyncClient, **params: str) -> httpx.Response:
        return await http.post("/oauth2/par", data={**params, **self.auth()})

    async def token(self, http: httpx.AsyncClient, aud: Any = None, **params: str) -> httpx.Response:
        return await http.post("/oauth2/token", data={**params, **self.auth(aud)})


async def register(dev: Flow, issuer: str, **settings: Any) -> App:
    key = ec.generate_private_key(ec.SECP256R1())
    flow = await new_app(
        dev, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]}, **settings
    )
    return App(flow, key, issuer)


@pytest.fixture(scope="module")
async def http(interop_server: ServerProcess) -> Any:
    async with httpx.AsyncClient(base_url=interop_server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def fapi(interop_dev: Flow, interop_server: ServerProcess) -> App:
    return await register(interop_dev, interop_server.base_url, security_profile="fapi2")


@pytest.fixture
async def ordinary(interop_dev: Flow, interop_server: ServerProcess) -> App:
    return await register(interop_dev, interop_server.base_url)


def request_params(challenge: str | None = None, **more: str) -> dict[str, str]:
    params = {"response_type": "code", "redirect_uri": REDIRECT_URI, "scope": "read_profile", "state": secrets.token_hex(6)}
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return {**params, **more}


async def authorized(
    app: App, http: httpx.AsyncClient, interop_server: ServerProcess, dev: Flow
) -> tuple[dict[str, str], str]:
    """A pushed request signed in and consented on the real pages: the answer's query and the verifier."""
    verifier, challenge = pkce()
    params = request_params(challenge)
    pushed = await app.push(http, **params)
    assert pushed.status_code == 201, pushed.text
    url = f"{interop_server.base_url}/oauth2/authorize?" + urlencode(
        {"client_id": app.client_id, "request_uri": pushed.json()["request_uri"]}
    )
    async with httpx.AsyncClient(timeout=30) as browser:
        location = await ActingUser(browser, dev.extra["email"], PASSWORD).authorize(url, REDIRECT_URI)
    got = query_of(location)
    assert got["state"] == params["state"]
    return got, verifier


async def test_the_app_shows_its_profile(fapi: App, http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/apps/{fapi.client_id}", headers={"Authorization": fapi.flow.dev_token})
    data = response.json()["data"]
    assert data["security_profile"] == "fapi2" and data["token_endpoint_auth_method"] == "private_key_jwt"
    # The setting as registered; the profile keeps refresh tokens whatever it says (see below).
    assert data["refresh_token_rotation"] is True


async def test_a_request_not_pushed_is_sent_back_refused(fapi: App, http: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    params = request_params(challenge, client_id=fapi.client_id)
    response = await http.get("/oauth2/authorize?" + urlencode(params))
    assert response.status_code in (302, 303), response.text
    got = query_of(response.headers["location"])
    assert got["error"] == "invalid_request" and "/oauth2/par" in got["error_description"]
    assert got["state"] == params["state"] and got["iss"] == str(http.base_url).rstrip("/")


async def test_a_pushed_request_needs_pkce_s256(fapi: App, ordinary: App, http: httpx.AsyncClient) -> None:
    missing = await fapi.push(http, **request_params())
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request", missing.text
    assert "PKCE is required" in missing.json()["error_description"]
    plain = await fapi.push(http, **request_params(code_challenge="a" * 43, code_challenge_method="plain"))
    assert plain.status_code == 400 and "S256" in plain.json()["error_description"], plain.text
    # A confidential app outside the profile may still leave PKCE out.
    assert (await ordinary.push(http, **request_params())).status_code == 201


async def test_par_pkce_and_private_key_jwt_end_to_end_without_rotation(
    fapi: App, http: httpx.AsyncClient, interop_server: ServerProcess, interop_dev: Flow
) -> None:
    got, verifier = await authorized(fapi, http, interop_server, interop_dev)
    assert got["iss"] == interop_server.base_url  # RFC 9207
    response = await fapi.token(http, grant_type="authorization_code", code=got["code"], code_verifier=verifier, redirect_uri=REDIRECT_URI)
    assert response.status_code == 200, response.text
    first = response.json()
    assert first["token_type"].lower() == "bearer" and first["scope"] == "read_profile"
    refresh_token = first["refresh_token"]
    # No rotation (FAPI 2.0 Security Profile §5.3.2.1): each refresh answers the same refresh token.
    seen = {first["access_token"]}
    for _ in range(2):
        refreshed = await fapi.token(http, grant_type="refresh_token", refresh_token=refresh_token)
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["refresh_token"] == refresh_token
        seen.add(refreshed.json()["access_token"])
    assert len(seen) == 3  # a new access token each time
    introspected = await http.post("/oauth2/introspect", data={"token": seen.pop(), **fapi.auth()})
    assert introspected.json()["active"] is True


async def test_codes_live_sixty_seconds(
    fapi: App, ordinary: App, http: httpx.AsyncClient, interop_server: ServerProcess, interop_dev: Flow
) -> None:
    await authorized(fapi, http, interop_server, interop_dev)
    await authorized(ordinary, http, interop_server, interop_dev)
    database = interop_server.log_path.parent / "grantd.db"  # the server's own SQLite file
    with sqlite3.connect(database) as db:
        lifetimes = {
            app_id: expires - created
            for app_id, created, expires in db.execute(
                "SELECT app_id, created_at, expires_at FROM authorization_codes WHERE app_id IN (?, ?)",
                (fapi.client_id, ordinary.client_id),
            )
        }
    assert lifetimes == {fapi.client_id: 60, ordinary.client_id: 300}


async def test_the_assertion_aud_is_the_issuer_alone(fapi: App, ordinary: App, http: httpx.AsyncClient) -> None:
    issuer = str(http.base_url).rstrip("/")
    for aud in (issuer + "/oauth2/token", [issuer], [issuer, issuer + "/oauth2/token"]):
        refused = await fapi.token(http, aud=aud, grant_type="client_credentials")
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", (aud, refused.text)
    assert (await fapi.token(http, grant_type="client_credentials")).status_code == 200
    # RFC 7523 §3: outside the profile, the token endpoint's URL is an audience too.
    accepted = await ordinary.token(http, aud=issuer + "/oauth2/token", grant_type="client_credentials")
    assert accepted.status_code == 200, accepted.text


async def test_the_neucron_authorize_calls_refuse_the_app(fapi: App, http: httpx.AsyncClient) -> None:
    flow = fapi.flow
    v1 = await http.post("/v1/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": flow.user_token})
    assert v1.status_code == 400, v1.text
    assert v1.json() == {"error": "unauthorized_client", "message": v1.json()["message"], "status_code": 400}
    assert "/oauth2/par" in v1.json()["message"]
    v2 = await http.get(
        "/v1/oauth/authorize",
        params={"response_type": "code", "client_id": fapi.client_id, "redirect_uri": REDIRECT_URI, "state": "s",
                "platform": "Test App"},
    )
    assert v2.status_code == 400 and v2.json()["error"] == "unauthorized_client", v2.text


# ---------------------------------------------------------------- a code 61 seconds on (in-process clock)


@pytest.mark.db
async def test_a_code_older_than_sixty_seconds_is_refused(app: Any, client: httpx.AsyncClient) -> None:
    from test_par import browser_of  # the in-process PAR tests' browser
    from support.neucron import sign_up, unique_email

    email = unique_email()
    await sign_up(client, email)
    ctx = app.state.ctx
    results = {}
    for profile in ("fapi2", "none"):
        key = ec.generate_private_key(ec.SECP256R1())
        flow = await new_flow(
            client, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]},
            security_profile=profile,
        )
        pk = App(flow, key, "http://testserver")
        verifier, challenge = pkce()
        pushed = await pk.push(client, **request_params(challenge))
        assert pushed.status_code == 201, pushed.text
        async with browser_of(app) as browser:
            url = "http://testserver/oauth2/authorize?" + urlencode({"client_id": pk.client_id, "request_uri": pushed.json()["request_uri"]})
            got = query_of(await ActingUser(browser, email, PASSWORD).authorize(url, REDIRECT_URI))
        now = ctx.now()
        ctx.now = lambda: now + 61  # the server's clock, 61 seconds on
        try:
            results[profile] = await pk.token(client, grant_type="authorization_code", code=got["code"], code_verifier=verifier)
        finally:
            del ctx.now
    assert results["fapi2"].status_code == 400 and results["fapi2"].json()["error"] == "invalid_grant", results["fapi2"].text
    assert results["none"].status_code == 200, results["none"].text


# ---------------------------------------------------------------- the settings' rules at /v1/apps (in process)


def _jwks() -> dict[str, Any]:
    return {"keys": [public_jwk(ec.generate_private_key(ec.SECP256R1()), "k1")]}


async def _create(client: httpx.AsyncClient, dev_token: str, **fields: Any) -> httpx.Response:
    body = {"name": "Bank App", "redirect_uris": [REDIRECT_URI], "permissions": "read_profile", **fields}
    return await client.post("/v1/apps", json=body, headers={"Authorization": dev_token})


def _refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["status_code"] == 400, body
    for word in words:
        assert word in body["message"], body


@pytest.mark.db
async def test_registering_a_fapi2_app_needs_a_confidential_private_key_jwt_client_with_keys(client: httpx.AsyncClient) -> None:
    from support.neucron import sign_up

    _, dev_token = await sign_up(client)
    _refused(await _create(client, dev_token, security_profile="fapi2"), "security_profile fapi2", "private_key_jwt")
    _refused(
        await _create(client, dev_token, security_profile="fapi2", token_endpoint_auth_method="client_secret_post"),
        "security_profile fapi2", "private_key_jwt",
    )
    _refused(await _create(client, dev_token, security_profile="fapi2", client_type="public"), "confidential")
    _refused(await _create(client, dev_token, security_profile="fapi2", token_endpoint_auth_method="private_key_jwt"), "jwks")
    _refused(await _create(client, dev_token, security_profile="fapi1"), "security_profile must be one of: none, fapi2")
    _refused(await _create(client, dev_token, refresh_token_rotation="no"))
    listed = await client.get("/v1/apps", headers={"Authorization": dev_token})
    assert listed.json()["data"]["apps"] == []  # nothing refused was registered
    created = await _create(
        client, dev_token, security_profile="fapi2", token_endpoint_auth_method="private_key_jwt",
        jwks_uri="https://bank.example.com/jwks.json",
    )
    assert created.status_code == 200 and created.json()["data"]["security_profile"] == "fapi2", created.text


@pytest.mark.db
async def test_a_fapi2_app_cannot_be_changed_out_of_its_requirements(client: httpx.AsyncClient) -> None:
    from support.neucron import sign_up

    _, dev_token = await sign_up(client)
    created = await _create(client, dev_token, token_endpoint_auth_method="private_key_jwt", jwks=_jwks())
    app_id = created.json()["data"]["app_id"]

    async def patch(**fields: Any) -> httpx.Response:
        return await client.patch(f"/v1/apps/{app_id}", json=fields, headers={"Authorization": dev_token})

    turned_on = await patch(security_profile="fapi2", refresh_token_rotation=False)
    assert turned_on.status_code == 200, turned_on.text
    data = turned_on.json()["data"]
    assert data["security_profile"] == "fapi2" and data["refresh_token_rotation"] is False
    _refused(await patch(token_endpoint_auth_method="client_secret_basic"), "security_profile fapi2")
    _refused(await patch(jwks={}), "jwks")
    unchanged = (await client.get(f"/v1/apps/{app_id}", headers={"Authorization": dev_token})).json()["data"]
    assert unchanged["token_endpoint_auth_method"] == "private_key_jwt" and unchanged["jwks"]
    # "" sets the profile back to its default; then the method may change.
    off = await patch(security_profile="", token_endpoint_auth_method="client_secret_basic")
    assert off.status_code == 200, off.text
    assert off.json()["data"]["security_profile"] == "none"
    assert off.json()["data"]["token_endpoint_auth_method"] == "client_secret_basic"
