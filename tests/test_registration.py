"""Dynamic client registration (RFC 7591) and its management (RFC 7592): the three policies, the
metadata's rules (the same as every app's), the registration access token, and a registered
client that is an app like any other: it gets tokens and its developer can disable it."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from acting_user import ActingUser, new_person
from grantd.config import Settings
from grantd.server import create_app
from grantd.store.db import Database
from grantd.store.schema import apps as apps_table
from grantd.store.schema import initial_access_tokens
from support.neucron import PASSWORD, sign_up

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
REDIRECT = "https://client.example.org/callback"


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(dynamic_registration=…, …)``: an httpx client of an app with those settings, on the
    session's database."""
    opened: list[Any] = []

    async def make(address: str = "127.0.0.1", **changes: Any) -> httpx.AsyncClient:
        changes.setdefault("rate_limit_registration_per_address", 1_000_000)
        application = create_app(settings.model_copy(update=changes))
        lifespan = application.router.lifespan_context(application)
        await lifespan.__aenter__()
        transport = httpx.ASGITransport(app=application, client=(address, 50000))
        client = httpx.AsyncClient(transport=transport, base_url=ISSUER)
        opened.append((lifespan, client))
        return client

    yield make
    for lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def initial_access_token(client: httpx.AsyncClient) -> tuple[str, str]:
    """(the developer's user token, a new initial access token of theirs)."""
    _, dev = await sign_up(client)
    response = await client.post("/v1/registration-tokens", json={}, headers={"Authorization": dev})
    assert response.status_code == 200, response.text
    return dev, response.json()["data"]["initial_access_token"]


async def register(client: httpx.AsyncClient, token: str | None = None, **metadata: Any) -> httpx.Response:
    body = {"redirect_uris": [REDIRECT], "client_name": "Registered Client", **metadata}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post("/oauth2/register", json=body, headers=headers)


def refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text
    assert set(response.json()) == {"error", "error_description"}


async def test_off_by_default(serve: Callable[..., Any]) -> None:
    client = await serve()
    refused(await register(client), 404, "not_found")
    document = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert "registration_endpoint" not in document


async def test_token_policy_needs_a_live_initial_access_token(serve: Callable[..., Any]) -> None:
    client = await serve(dynamic_registration="token")
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert document["registration_endpoint"] == f"{ISSUER}/oauth2/register"
    response = await register(client)
    refused(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")
    refused(await register(client, "gri_not-a-token"), 401, "invalid_token")

    dev, token = await initial_access_token(client)
    response = await register(client, token)
    assert response.status_code == 201, response.text
    client_id = response.json()["client_id"]
    # The app is the developer's, as if registered through /v1/apps.
    listed = (await client.get("/v1/apps", headers={"Authorization": dev})).json()["data"]["apps"]
    assert [app["app_id"] for app in listed] == [client_id]
    assert listed[0]["name"] == "Registered Client" and listed[0]["redirect_uris"] == [REDIRECT]
    assert (listed[0]["registration"], listed[0]["application_type"]) == ("initial_access_token", "web")

    tokens = (await client.get("/v1/registration-tokens", headers={"Authorization": dev})).json()["data"]["tokens"]
    assert len(tokens) == 1 and tokens[0]["revoked"] is False and "initial_access_token" not in tokens[0]
    revoked = await client.delete(f"/v1/registration-tokens/{tokens[0]['token_id']}", headers={"Authorization": dev})
    assert revoked.json()["data"]["revoked"] is True
    refused(await register(client, token), 401, "invalid_token")
    # Another developer can neither see nor revoke it.
    _, other = await sign_up(client)
    assert (await client.delete(f"/v1/registration-tokens/{tokens[0]['token_id']}", headers={"Authorization": other})).status_code == 404


async def test_open_policy_is_rate_limited_per_address(serve: Callable[..., Any]) -> None:
    address = f"192.0.2.{secrets.randbelow(250) + 1}"
    client = await serve(address, dynamic_registration="open", rate_limit_registration_per_address=2)
    assert (await register(client)).status_code == 201
    assert (await register(client)).status_code == 201
    response = await register(client)
    refused(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) > 0
    # Another address, and a developer's initial access token, are not limited by it.
    assert (await register(await serve("198.51.100.7", dynamic_registration="open"))).status_code == 201
    _, token = await initial_access_token(client)
    assert (await register(client, token)).status_code == 201


async def test_registered_metadata_and_client_information(serve: Callable[..., Any]) -> None:
    client = await serve(dynamic_registration="open")
    response = await register(
        client,
        token_endpoint_auth_method="client_secret_post",
        grant_types=["authorization_code", "refresh_token"],
        scope="openid read_profile",
        logo_uri="https://client.example.org/logo.png",
        client_uri="https://client.example.org",
        post_logout_redirect_uris=["https://client.example.org/bye"],
        contacts=["ops@client.example.org"],  # not known to grantd: ignored (RFC 7591 §2)
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    assert data["client_secret"].startswith("gks_") and data["client_secret_expires_at"] == 0
    assert data["registration_client_uri"] == f"{ISSUER}/oauth2/register/{data['client_id']}"
    assert data["token_endpoint_auth_method"] == "client_secret_post"
    assert data["grant_types"] == ["authorization_code", "refresh_token"]
    assert data["response_types"] == ["code"] and data["application_type"] == "web"
    assert "read_profile" in data["scope"].split() and "write_data" not in data["scope"].split()
    assert data["logo_uri"] == "https://client.example.org/logo.png"
    assert data["post_logout_redirect_uris"] == ["https://client.example.org/bye"]
    assert isinstance(data["client_id_issued_at"], int) and "contacts" not in data


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["http://client.example.org/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://client.example.org/cb#frag"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://[::1"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://client.example.org/\u0000"]}, "invalid_redirect_uri"),
        ({"client_name": "a\u0000b"}, "invalid_client_metadata"),
        ({"redirect_uris": "https://client.example.org/cb"}, "invalid_redirect_uri"),
        ({"redirect_uris": ["com.example.app:/cb"]}, "invalid_redirect_uri"),  # a web client's
        ({"grant_types": ["password"]}, "invalid_client_metadata"),
        ({"grant_types": ["implicit"]}, "invalid_client_metadata"),
        ({"response_types": ["token"]}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),  # no jwks
        ({"application_type": "desktop"}, "invalid_client_metadata"),
        ({"scope": "read_profile launch_missiles"}, "invalid_client_metadata"),
        ({"logo_uri": "http://client.example.org/logo.png"}, "invalid_client_metadata"),
        ({"logo_uri": 7}, "invalid_client_metadata"),
        ({"client_name": ["a"]}, "invalid_client_metadata"),
        ({"subject_type": "secret"}, "invalid_client_metadata"),
        ({"jwks": "not a set"}, "invalid_client_metadata"),
        ({"id_token_signed_response_alg": "none"}, "invalid_client_metadata"),
    ],
)
async def test_metadata_refused(serve: Callable[..., Any], metadata: dict[str, Any], error: str) -> None:
    client = await serve(dynamic_registration="open")
    refused(await register(client, **metadata), 400, error)


async def test_a_body_that_is_not_metadata(serve: Callable[..., Any]) -> None:
    client = await serve(dynamic_registration="open")
    for body in (b"not json", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b"[" * 30000 + b"]" * 30000, b'{"redirect_uris": [' * 3000):
        response = await client.post("/oauth2/register", content=body, headers={"Content-Type": "application/json"})
        refused(response, 400, "invalid_client_metadata")


async def test_read_update_and_delete_with_the_registration_access_token(serve: Callable[..., Any]) -> None:
    client = await serve(dynamic_registration="open")
    created = (await register(client, token_endpoint_auth_method="client_secret_basic")).json()
    client_id, rat, secret = created["client_id"], created["registration_access_token"], created["client_secret"]
    uri = created["registration_client_uri"].removeprefix(ISSUER)
    bearer = {"Authorization": f"Bearer {rat}"}

    read = await client.get(uri, headers=bearer)
    assert read.status_code == 200, read.text
    assert read.json()["client_id"] == client_id and read.json()["client_name"] == "Registered Client"
    assert "client_secret" not in read.json() and "registration_access_token" not in read.json()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {rat}"}):
        refused(await client.get(uri, headers=headers), 401, "invalid_token")
    # Another client's token does not open this one (nor tells whether it exists).
    other = (await register(client)).json()
    refused(await client.get(uri, headers={"Authorization": f"Bearer {other['registration_access_token']}"}), 401, "invalid_token")
    refused(await client.get("/oauth2/register/no-such-client", headers=bearer), 401, "invalid_token")

    # PUT replaces the metadata: what it leaves out is cleared.
    changed = {
        "client_id": client_id,
        "client_secret": secret,
        "client_name": "Renamed",
        "redirect_uris": ["https://client.example.org/other"],
        "token_endpoint_auth_method": "client_secret_basic",
        "logo_uri": "https://client.example.org/new.png",
    }
    response = await client.put(uri, json=changed, headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json()["client_name"] == "Renamed"
    assert response.json()["redirect_uris"] == ["https://client.example.org/other"]
    response = await client.put(uri, json={k: v for k, v in changed.items() if k != "logo_uri"}, headers=bearer)
    assert "logo_uri" not in response.json()
    refused(await client.put(uri, json={**changed, "client_id": other["client_id"]}, headers=bearer), 400, "invalid_client_metadata")
    refused(await client.put(uri, json={**changed, "client_secret": "gks_00_wrong"}, headers=bearer), 400, "invalid_client_metadata")
    refused(await client.put(uri, json={**changed, "redirect_uris": ["ftp://x"]}, headers=bearer), 400, "invalid_redirect_uri")
    refused(
        await client.put(uri, json={**changed, "token_endpoint_auth_method": "none"}, headers=bearer),
        400, "invalid_client_metadata",
    )
    assert (await client.get(uri, headers=bearer)).json()["client_name"] == "Renamed"  # the refusals changed nothing

    # DELETE disables the app: its secret and the registration access token stop working.
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    assert (await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic)).status_code == 200
    response = await client.delete(uri, headers=bearer)
    assert response.status_code == 204 and response.content == b""
    refused(await client.get(uri, headers=bearer), 401, "invalid_token")
    assert (await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic)).status_code == 401


async def test_dpop_the_security_profile_and_rotation_are_registered_and_read_back(serve: Callable[..., Any]) -> None:
    client = await serve(dynamic_registration="open")
    settings = {"dpop_bound_access_tokens": True, "refresh_token_rotation": False}
    created = (await register(client, **settings)).json()
    assert {name: created.get(name) for name in settings} == settings, created
    uri, bearer = created["registration_client_uri"].removeprefix(ISSUER), {"Authorization": f"Bearer {created['registration_access_token']}"}
    read = (await client.get(uri, headers=bearer)).json()
    assert {name: read.get(name) for name in settings} == settings, read
    # An app that requires DPoP refuses a token request without a proof.
    basic = (created["client_id"], created["client_secret"])
    response = await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=basic)
    assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof", response.text
    # PUT without them: each back to its default (rotation on, DPoP not required), shown by leaving it out.
    replaced = await client.put(
        uri, json={"client_id": created["client_id"], "redirect_uris": [REDIRECT], "client_name": "Registered Client"}, headers=bearer
    )
    assert replaced.status_code == 200, replaced.text
    assert not set(settings) & set(replaced.json()), replaced.json()
    assert (await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=basic)).status_code == 200
    # security_profile fapi2 needs private_key_jwt with keys, as for any app.
    refused(await register(client, security_profile="fapi2"), 400, "invalid_client_metadata")


async def test_tokens_are_hashed_at_rest(serve: Callable[..., Any], settings: Settings) -> None:
    client = await serve(dynamic_registration="token")
    _, iat = await initial_access_token(client)
    created = (await register(client, iat)).json()
    rat = created["registration_access_token"]
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            app_row = (await conn.execute(select(apps_table).where(apps_table.c.id == created["client_id"]))).one()
            token_rows = (await conn.execute(select(initial_access_tokens))).all()
    finally:
        await db.dispose()
    stored = [str(value) for value in app_row] + [str(value) for row in token_rows for value in row]
    assert not any(rat in value or iat in value or created["client_secret"] in value for value in stored)
    assert app_row.registration_access_token_hash and len(app_row.registration_access_token_hash) == 64
    assert app_row.registration == "initial_access_token"


async def test_a_registered_client_gets_tokens_and_is_disabled_like_any_app(serve: Callable[..., Any]) -> None:
    client = await serve(dynamic_registration="token")
    dev, iat = await initial_access_token(client)
    created = (await register(client, iat, grant_types=["client_credentials"], scope="read_profile")).json()
    form = {"grant_type": "client_credentials", "client_id": created["client_id"], "client_secret": created["client_secret"]}
    response = await client.post("/oauth2/token", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read_profile"
    # Its developer disables it through /v1/apps, as any app.
    assert (await client.delete(f"/v1/apps/{created['client_id']}", headers={"Authorization": dev})).status_code == 200
    refused(await client.post("/oauth2/token", data=form), 401, "invalid_client")


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(hashlib.sha256(b"registration-test").digest()).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def test_a_native_client_on_any_loopback_port(serve: Callable[..., Any]) -> None:
    """RFC 8252 §7.3: a native app registers http://127.0.0.1/cb and is sent back to whatever port it listens on."""
    client = await serve(dynamic_registration="open")
    created = await register(
        client, redirect_uris=["http://127.0.0.1/callback"], application_type="native", token_endpoint_auth_method="none"
    )
    assert created.status_code == 201, created.text
    client_id = created.json()["client_id"]
    assert "client_secret" not in created.json()
    verifier, challenge = _pkce()
    redirect_uri = "http://127.0.0.1:53682/callback"
    query = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "read_profile",
        "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    transport = client._transport  # the same application, in a browser of its own
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as browser:
        user_id, email = await new_person(client)
        person = ActingUser(browser, email, PASSWORD, user_id=user_id)
        back = await person.authorize(f"/oauth2/authorize?{urlencode(query)}", redirect_uri)
        # Any other path on the loopback host is still refused.
        refused_page = await browser.get(f"/oauth2/authorize?{urlencode({**query, 'redirect_uri': 'http://127.0.0.1:53682/other'})}")
        assert refused_page.status_code == 400
    assert urlsplit(back).port == 53682
    code = parse_qs(urlsplit(back).query)["code"][0]
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
              "code_verifier": verifier},
    )
    assert response.status_code == 200, response.text


def test_operator_tokens_from_the_cli_on_a_real_server(
    tmp_path: Any, secret_key: str, server_factory: Callable[..., Any]
) -> None:
    """`grantd registration-tokens create` (no owner), a real `grantd serve` registering with it: the app
    belongs to no developer; `grantd apps list --self-registered` shows it and `grantd apps disable` stops it."""
    from test_cli import Cli

    cli = Cli(tmp_path, secret_key)
    assert cli.run("migrate").returncode == 0
    created = cli.json("registration-tokens", "create", "--expires-in", "3600")
    token = created["initial_access_token"]
    assert token.startswith("gri_") and created["expires_at"] is not None
    server = server_factory(cli.database_url, env={"GRANTD_DYNAMIC_REGISTRATION": "token"})
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        response = http.post(
            "/oauth2/register", json={"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        data = response.json()
        assert data["client_name"] == "client.example.org"  # the first redirect URI's host, for want of a name
        form = {"grant_type": "client_credentials", "client_id": data["client_id"], "client_secret": data["client_secret"]}
        assert http.post("/oauth2/token", data=form).status_code == 200

        listed = cli.json("apps", "list", "--self-registered")["apps"]
        assert [(app["app_id"], app["registration"]) for app in listed] == [(data["client_id"], "initial_access_token")]
        assert [t["token_id"] for t in cli.json("registration-tokens", "list")["tokens"]] == [created["token_id"]]
        assert cli.run("apps", "disable", data["client_id"]).returncode == 0
        assert http.post("/oauth2/token", data=form).status_code == 401

        assert cli.run("registration-tokens", "revoke", created["token_id"]).returncode == 0
        response = http.post("/oauth2/register", json={"redirect_uris": [REDIRECT]}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"


async def test_the_console_creates_and_revokes_registration_tokens(serve: Callable[..., Any]) -> None:
    from test_console import post_form, signed_in, text_of

    client = await serve(dynamic_registration="token")
    application = client._transport.app  # type: ignore[attr-defined]
    async with signed_in(application) as dev:
        login = await client.post("/v1/auth/login", json={"email": dev.email, "password": PASSWORD})
        dev_token = login.json()["data"]["access_token"]
        page = await dev.http.get("/console")
        assert "Registration tokens" in page.text
        created = await dev.http.post("/console/registration-tokens", data=dict(post_form(page, "/console/registration-tokens")))
        assert created.status_code == 200, created.text
        token = text_of(created, "registration-token")
        assert token.startswith("gri_") and "not be shown again" in created.text
        response = await register(client, token)
        assert response.status_code == 201, response.text
        page = await dev.http.get("/console")
        assert "Registered Client" in page.text  # the registered app is one of the developer's
        token_id = text_of(created, "token-id")
        assert token not in page.text and token_id in page.text  # the list never shows the token again
        action = f"/console/registration-tokens/{token_id}/revoke"
        revoked = await dev.http.post(action, data=dict(post_form(page, action)))
        assert revoked.status_code == 303
        refused(await register(client, token), 401, "invalid_token")
        # A forged form (no CSRF token) creates nothing.
        forged = await dev.http.post("/console/registration-tokens", data={"csrf_token": "forged"})
        assert forged.status_code == 403 and "gri_" not in forged.text
        listed = (await client.get("/v1/registration-tokens", headers={"Authorization": dev_token})).json()["data"]["tokens"]
        assert [t["token_id"] for t in listed] == [token_id]
    # Registration off: no section.
    client = await serve()
    async with signed_in(client._transport.app) as dev:  # type: ignore[attr-defined]
        assert "Registration tokens" not in (await dev.http.get("/console")).text


async def test_off_whatever_is_sent(serve: Callable[..., Any]) -> None:
    client = await serve()
    response = await client.post("/oauth2/register", content=b"not json", headers={"Authorization": "Basic x"})
    refused(response, 404, "not_found")


async def test_initial_access_token_expiry_and_bad_requests(serve: Callable[..., Any], settings: Settings) -> None:
    client = await serve(dynamic_registration="token")
    _, dev = await sign_up(client)
    headers = {"Authorization": dev}
    response = await client.post("/v1/registration-tokens", json={"expires_in": 3600}, headers=headers)
    data = response.json()["data"]
    assert data["expires_at"] is not None and data["expires_at"] > data["created_at"]
    assert (await register(client, data["initial_access_token"])).status_code == 201
    db = Database(settings.resolved_database_url)
    try:
        async with db.write() as tx:  # an hour later
            await tx.execute(
                update(initial_access_tokens).where(initial_access_tokens.c.id == data["token_id"]).values(expires_at=1)
            )
    finally:
        await db.dispose()
    refused(await register(client, data["initial_access_token"]), 401, "invalid_token")
    for body in ({"expires_in": 5}, {"expires_in": "3600"}, None):
        response = await client.post("/v1/registration-tokens", json=body, headers=headers)
        assert response.status_code == 400, response.text
    assert (await client.post("/v1/registration-tokens", json={})).status_code == 401
