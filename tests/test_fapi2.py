"""The FAPI 2.0 security profile (``security_profile: fapi2``) against a real `grantd serve`: an app
under it is authorized only through a pushed request (RFC 9126) that names its ``redirect_uri``,
with PKCE S256, authenticates with private_key_jwt whose assertions name the issuer alone as
``aud``, gets codes that live at most
60 seconds and an ``iss`` in every authorization response, gets only DPoP-bound access tokens (RFC
9449: every token request carries a proof; the code is bound to the key at the pushed request), and
keeps its refresh token on a refresh. Another private_key_jwt app, on the same server, keeps the
ordinary rules (an endpoint URL as aud, 5-minute codes, rotation, bearer tokens).

A code redeemed 61 seconds on is judged on the in-process app, whose clock the test moves (the
real server's clock cannot be moved); the real server shows the code's stored lifetime.
"""

from __future__ import annotations

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
from support.dpop import Holder, claims_of, pkce
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


def query_of(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT_URI + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


class App:
    """An app registered on the server for private_key_jwt, with its private key, and ``holder``,
    the DPoP key it proves possession of (None: the app sends no proofs)."""

    def __init__(self, flow: Flow, key: ec.EllipticCurvePrivateKey, issuer: str, holder: Holder | None = None) -> None:
        self.flow, self.key, self.issuer, self.holder = flow, key, issuer, holder
        self.client_id = flow.app_id

    def auth(self, aud: Any = None) -> dict[str, str]:
        return assertion(self.key, self.client_id, self.issuer if aud is None else aud)

    def dpop(self, endpoint: str, by: Holder | None = None) -> dict[str, str]:
        """The DPoP header of a request to ``/oauth2/<endpoint>``, by ``by`` or else the app's holder."""
        holder = by or self.holder
        return {"DPoP": holder.proof("POST", f"{self.issuer}/oauth2/{endpoint}")} if holder else {}

    async def push(self, http: httpx.AsyncClient, binding: str | None = "proof", **params: str) -> httpx.Response:
        """A pushed request; the app's DPoP key binds its code by a proof at PAR (RFC 9449 §10.1,
        ``binding="proof"``), or by ``dpop_jkt`` (§10, ``binding="dpop_jkt"``), or not (None)."""
        headers = self.dpop("par") if binding == "proof" else {}
        if binding == "dpop_jkt" and self.holder is not None:
            params = {**params, "dpop_jkt": self.holder.jkt}
        return await http.post("/oauth2/par", data={**params, **self.auth()}, headers=headers)

    async def token(
        self, http: httpx.AsyncClient, aud: Any = None, *, by: Holder | None = None, unbound: bool = False, **params: str
    ) -> httpx.Response:
        """A token request with a proof by ``by`` (else the app's holder, if any); ``unbound``: none."""
        headers = {} if unbound else self.dpop("token", by)
        return await http.post("/oauth2/token", data={**params, **self.auth(aud)}, headers=headers)


async def register(dev: Flow, issuer: str, **settings: Any) -> App:
    key = ec.generate_private_key(ec.SECP256R1())
    flow = await new_app(
        dev, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]}, **settings
    )
    return App(flow, key, issuer, Holder() if settings.get("security_profile") == "fapi2" else None)


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
    app: App, http: httpx.AsyncClient, interop_server: ServerProcess, dev: Flow, binding: str | None = "proof", **more: str
) -> tuple[dict[str, str], str]:
    """A pushed request (its code bound to the app's DPoP key by ``binding``, see ``App.push``) signed
    in and consented on the real pages: the answer's query and the verifier."""
    verifier, challenge = pkce()
    params = request_params(challenge, **more)
    pushed = await app.push(http, binding, **params)
    assert pushed.status_code == 201, pushed.text
    url = f"{interop_server.base_url}/oauth2/authorize?" + urlencode(
        {"client_id": app.client_id, "request_uri": pushed.json()["request_uri"]}
    )
    async with httpx.AsyncClient(timeout=30) as browser:
        location = await ActingUser(browser, dev.extra["email"], PASSWORD).authorize(url, REDIRECT_URI)
    got = query_of(location)
    assert got["state"] == params["state"]
    return got, verifier


def code_grant(got: dict[str, str], verifier: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": got["code"], "code_verifier": verifier, "redirect_uri": REDIRECT_URI}


def refused(response: httpx.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text


async def test_the_app_shows_its_profile(fapi: App, http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/apps/{fapi.client_id}", headers={"Authorization": fapi.flow.dev_token})
    data = response.json()["data"]
    assert data["security_profile"] == "fapi2" and data["token_endpoint_auth_method"] == "private_key_jwt"
    # The settings as registered; the profile keeps refresh tokens and requires DPoP whatever they say (see below).
    assert data["refresh_token_rotation"] is True and data["dpop_bound_access_tokens"] is False


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


async def test_a_pushed_request_must_name_its_redirect_uri(fapi: App, ordinary: App, http: httpx.AsyncClient) -> None:
    """FAPI 2.0 Security Profile §5.3.2.2: the redirect_uri is required in a pushed request, even
    from an app with one registered URI (which RFC 6749 §3.1.2.3 lets stand in for it otherwise)."""
    _, challenge = pkce()
    params = {name: value for name, value in request_params(challenge).items() if name != "redirect_uri"}
    missing = await fapi.push(http, **params)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request", missing.text
    assert "redirect_uri is required" in missing.json()["error_description"]
    assert (await fapi.push(http, **request_params(challenge))).status_code == 201
    # An app outside the profile may leave it out: its one registered URI stands in.
    assert (await ordinary.push(http, **params)).status_code == 201


@pytest.mark.parametrize("binding", ["proof", "dpop_jkt"])
async def test_par_pkce_private_key_jwt_and_dpop_end_to_end_without_rotation(
    binding: str, fapi: App, http: httpx.AsyncClient, interop_server: ServerProcess, interop_dev: Flow
) -> None:
    assert fapi.holder is not None
    got, verifier = await authorized(fapi, http, interop_server, interop_dev, binding)
    assert got["iss"] == interop_server.base_url  # RFC 9207
    # The code is bound to the app's DPoP key at PAR: a proof by another key does not redeem it, nor spend it.
    refused(await fapi.token(http, by=Holder(), **code_grant(got, verifier)), "invalid_grant")
    response = await fapi.token(http, **code_grant(got, verifier))
    assert response.status_code == 200, response.text
    first = response.json()
    # What a FAPI client checks: a DPoP-bound token (RFC 9449 §5, §6.1), bound to its own key.
    assert first["token_type"] == "DPoP" and first["scope"] == "read_profile"
    assert claims_of(first["access_token"])["cnf"] == {"jkt": fapi.holder.jkt}
    refresh_token = first["refresh_token"]
    # No rotation (FAPI 2.0 Security Profile §5.3.2.1): each refresh, with a proof by the same key,
    # answers the same refresh token and a new access token bound to that key.
    seen = {first["access_token"]}
    for _ in range(2):
        refreshed = await fapi.token(http, grant_type="refresh_token", refresh_token=refresh_token)
        assert refreshed.status_code == 200, refreshed.text
        body = refreshed.json()
        assert body["refresh_token"] == refresh_token and body["token_type"] == "DPoP"
        assert claims_of(body["access_token"])["cnf"] == {"jkt": fapi.holder.jkt}
        seen.add(body["access_token"])
    assert len(seen) == 3  # a new access token each time
    introspected = (await http.post("/oauth2/introspect", data={"token": seen.pop(), **fapi.auth()})).json()
    assert introspected["active"] is True
    assert introspected["token_type"] == "DPoP" and introspected["cnf"] == {"jkt": fapi.holder.jkt}


async def test_a_fapi2_app_gets_no_bearer_token_and_its_token_is_no_bearer_token(
    fapi: App, http: httpx.AsyncClient, interop_server: ServerProcess, interop_dev: Flow
) -> None:
    assert fapi.holder is not None
    base = interop_server.base_url
    # A token request without a proof is refused, whatever the grant (RFC 9449 §5.2), the app's
    # dpop_bound_access_tokens being false: the profile requires DPoP.
    refused(await fapi.token(http, unbound=True, grant_type="client_credentials"), "invalid_dpop_proof")
    # (The code not bound at PAR, which the profile leaves to the client: what refuses it is the requirement.)
    got, verifier = await authorized(fapi, http, interop_server, interop_dev, None, scope="openid read_profile")
    refused(await fapi.token(http, unbound=True, **code_grant(got, verifier)), "invalid_dpop_proof")
    # Refused before it was spent: the code still redeems with the key's proof.
    response = await fapi.token(http, **code_grant(got, verifier))
    assert response.status_code == 200, response.text
    tokens = response.json()
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refused(await fapi.token(http, unbound=True, **refresh), "invalid_dpop_proof")
    token, userinfo = tokens["access_token"], f"{base}/oauth2/userinfo"
    # The bound token as a bearer token at UserInfo: refused (RFC 9449 §7.2) ...
    as_bearer = await http.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401 and as_bearer.json()["error"] == "invalid_token", as_bearer.text
    assert as_bearer.headers["www-authenticate"].startswith('Bearer realm="grantd", error="invalid_token"')
    # ... and with the DPoP scheme and a proof by the app's key (with ath), answered.
    proof = fapi.holder.proof("GET", userinfo, token=token)
    answered = await http.get("/oauth2/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert answered.status_code == 200 and answered.json()["sub"] == interop_dev.user_id, answered.text
    # The refresh token survived the refused refresh.
    assert (await fapi.token(http, **refresh)).json()["refresh_token"] == tokens["refresh_token"]


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
        pk = App(flow, key, "http://testserver", Holder())
        verifier, challenge = pkce()
        pushed = await pk.push(client, **request_params(challenge))
        assert pushed.status_code == 201, pushed.text
        async with browser_of(app) as browser:
            url = "http://testserver/oauth2/authorize?" + urlencode({"client_id": pk.client_id, "request_uri": pushed.json()["request_uri"]})
            got = query_of(await ActingUser(browser, email, PASSWORD).authorize(url, REDIRECT_URI))
        now = ctx.now()
        ctx.now = lambda: now + 61  # the server's clock, 61 seconds on
        try:
            results[profile] = await pk.token(
                client, grant_type="authorization_code", code=got["code"], code_verifier=verifier, redirect_uri=REDIRECT_URI
            )
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
