"""RFC 8707 resource indicators against real `grantd serve` processes: ``resource`` at the
authorization, PAR and token endpoints sets the access token's ``aud`` to exactly that URI (the
JWT decoded with the published keys, and introspection); anything else is ``invalid_target``, sent
back to the redirect URI at the authorization endpoint and a 400 at the token and PAR endpoints; a
refresh narrows to one of the grant's resources and never widens; client_credentials takes one
too. Under ``GRANTD_RESOURCE_POLICY=registered`` only the resources the operator registered
(``grantd resources`` and ``/v1/resources``) are accepted, each narrowing its tokens to the
permissions it accepts. Authlib, which no one here wrote, sends ``resource`` once."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session
from cryptography.hazmat.primitives.asymmetric import ec

from acting_user import ActingUser, developer, new_app, parse_forms
from support.interop import consent
from support.neucron import PASSWORD, Flow, sign_up, unique_email
from support.servers import ServerProcess, start_server
from test_private_key_jwt import assertion, public_jwk

MCP = "https://mcp.example.com/mcp"
FILES = "https://files.example.com/api"
ELSEWHERE = "https://elsewhere.example.com/"
LOOPBACK = "http://127.0.0.1:8931/mcp"


# ---------------------------------------------------------------- servers


def _database(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """A new SQLite file, or the session's PostgreSQL database (each test makes its own users and apps)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite+aiosqlite:///{data_dir / 'grantd.db'}"


def _env(database_url: str, data_dir: Path, secret_key: str) -> dict[str, str]:
    return {
        **os.environ,
        "GRANTD_DATABASE_URL": database_url,
        "GRANTD_SECRET_KEY": secret_key,
        "GRANTD_DATA_DIR": str(data_dir),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`grantd …` as an operator runs it, against the server's database."""
    return subprocess.run(
        [sys.executable, "-m", "grantd", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Registered:
    """A server under the registered policy, its operator's command line, and the one user
    GRANTD_RESOURCE_ADMINS names."""

    def __init__(self, server: ServerProcess, env: dict[str, str], admin_email: str) -> None:
        self.server, self.env, self.admin_email = server, env, admin_email


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def any_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    """The default policy (any https resource)."""
    data_dir = tmp_path_factory.mktemp("resources-any")
    server = start_server(_database(request, data_dir), secret_key, data_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[Registered]:
    """GRANTD_RESOURCE_POLICY=registered; the admin made by `grantd users create`; MCP registered
    by `grantd resources create`, accepting read_profile only."""
    data_dir = tmp_path_factory.mktemp("resources-registered")
    env = _env(_database(request, data_dir), data_dir, secret_key)
    admin_email = unique_email()
    admin = cli_json(env, "users", "create", "--email", admin_email, "--password", PASSWORD)
    created = cli_json(env, "resources", "create", "--uri", MCP, "--permissions", "read_profile", "--description", "MCP")
    assert created["uri"] == MCP and created["permissions"] == "read_profile" and created["description"] == "MCP"
    server = start_server(
        env["GRANTD_DATABASE_URL"], secret_key, data_dir,
        env={"GRANTD_RESOURCE_POLICY": "registered", "GRANTD_RESOURCE_ADMINS": f"nobody, {admin['user_id']}"},
    )
    try:
        yield Registered(server, env, admin_email)
    finally:
        server.stop()


# ---------------------------------------------------------------- the client's side


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_url(base: str, flow: Flow, resources: list[str], scope: str = "read_profile write_data") -> tuple[str, str, str]:
    """An authorization request naming ``resources`` (the parameter repeated); (url, state, verifier)."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(8)
    params = [
        ("response_type", "code"), ("client_id", flow.app_id), ("redirect_uri", flow.redirect_uri), ("scope", scope),
        ("state", state), ("code_challenge", challenge), ("code_challenge_method", "S256"),
        *(("resource", uri) for uri in resources),
    ]
    return f"{base}/oauth2/authorize?{urlencode(params)}", state, verifier


def answer(location: str, flow: Flow) -> dict[str, str]:
    assert location.startswith(flow.redirect_uri + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def code_for(
    base: str, flow: Flow, resources: list[str], scope: str = "read_profile write_data", *, granted_before: bool = False
) -> tuple[str, str]:
    """The user signs in and allows on the consent page, which names the resources (no page when
    the permissions were ``granted_before``); (code, verifier)."""
    url, state, verifier = authorization_url(base, flow, resources, scope)
    async with httpx.AsyncClient(timeout=30) as browser:
        user = ActingUser(browser, flow.extra["email"], PASSWORD)
        location = await user.authorize(url, flow.redirect_uri)
    consent_pages = [page for page in user.pages if 'name="decision"' in page.text]
    assert len(consent_pages) == (0 if granted_before else 1)
    for page in consent_pages:
        shown = re.findall(r'<code class="resource">([^<]*)</code>', page.text)
        assert [html.unescape(uri) for uri in shown] == resources, shown
    params = answer(location, flow)
    assert params.get("state") == state and "code" in params, params
    return params["code"], verifier


async def token(http: httpx.AsyncClient, flow: Flow, **form: str | list[str]) -> httpx.Response:
    return await http.post("/oauth2/token", data=form, auth=(flow.app_id, flow.key_secret))


async def redeem(http: httpx.AsyncClient, flow: Flow, code: str, verifier: str, **more: str) -> httpx.Response:
    return await token(
        http, flow, grant_type="authorization_code", code=code, code_verifier=verifier, redirect_uri=flow.redirect_uri,
        **more,
    )


def claims(base: str, access_token: str, audience: str) -> dict[str, Any]:
    """As the resource server does: verified with the published keys, ``aud`` exactly ``audience``."""
    key = jwt.PyJWKClient(f"{base}/.well-known/jwks.json", cache_keys=False).get_signing_key_from_jwt(access_token)
    decoded = jwt.decode(access_token, key.key, algorithms=["ES256"], audience=audience, issuer=base)
    assert decoded["aud"] == audience  # one URI, not a list holding it
    return decoded


def invalid_target(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_target", body
    assert response.headers["cache-control"] == "no-store"
    return body["error_description"]


async def introspected(http: httpx.AsyncClient, flow: Flow, access_token: str) -> dict[str, Any]:
    response = await http.post("/oauth2/introspect", data={"token": access_token}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    return response.json()


@asynccontextmanager
async def dev_on(base: str) -> AsyncIterator[Flow]:
    """A developer and an end user on the server at ``base`` (``developer``), its client closed after."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        yield await developer(http)


# ---------------------------------------------------------------- the any policy


async def test_authorize_and_token_set_aud_to_the_resource_and_refresh_narrows_never_widens(any_server: ServerProcess) -> None:
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        code, verifier = await code_for(base, flow, [MCP, FILES])

        # The token request picks one of the two: aud is exactly it; introspection says the same.
        response = await redeem(http, flow, code, verifier, resource=MCP)
        assert response.status_code == 200, response.text
        issued = response.json()
        first = claims(base, issued["access_token"], MCP)
        assert first["scope"] == "read_profile write_data" and first["sub"] == flow.user_id
        info = await introspected(http, flow, issued["access_token"])
        assert info["active"] is True and info["aud"] == MCP and info["jti"] == first["jti"]
        with pytest.raises(jwt.InvalidAudienceError):  # a resource server that is not MCP refuses it
            claims(base, issued["access_token"], base)
        # grantd's own UserInfo is not MCP either.
        userinfo = await http.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {issued['access_token']}"})
        assert userinfo.status_code == 401

        # A refresh may name the other granted resource, with a narrower scope too.
        refresh = issued["refresh_token"]
        response = await token(http, flow, grant_type="refresh_token", refresh_token=refresh, resource=FILES, scope="read_profile")
        assert response.status_code == 200, response.text
        refreshed = response.json()
        assert claims(base, refreshed["access_token"], FILES)["scope"] == "read_profile"
        refresh = refreshed["refresh_token"]

        # Never one the grant was not authorized for; nor, for a grant of two, none at all. The
        # refresh token is left unspent by a refused request.
        description = invalid_target(await token(http, flow, grant_type="refresh_token", refresh_token=refresh, resource=ELSEWHERE))
        assert "not one of the resources" in description
        assert "several resources" in invalid_target(await token(http, flow, grant_type="refresh_token", refresh_token=refresh))
        assert invalid_target(await token(http, flow, grant_type="refresh_token", refresh_token=refresh, resource="/mcp"))

        # The successor of a narrowed refresh keeps the whole grant: back to MCP and both permissions.
        response = await token(http, flow, grant_type="refresh_token", refresh_token=refresh, resource=MCP)
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], MCP)["scope"] == "read_profile write_data"

        # A code of two resources redeemed without naming one, or naming another: invalid_target,
        # and the code stays unspent for the right request.
        code, verifier = await code_for(base, flow, [MCP, FILES], granted_before=True)
        assert "several resources" in invalid_target(await redeem(http, flow, code, verifier))
        invalid_target(await redeem(http, flow, code, verifier, resource=ELSEWHERE))
        response = await redeem(http, flow, code, verifier, resource=FILES)
        assert response.status_code == 200, response.text
        claims(base, response.json()["access_token"], FILES)


async def test_one_resource_is_the_token_audience_without_naming_it_again(any_server: ServerProcess) -> None:
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        code, verifier = await code_for(base, flow, [LOOPBACK])  # http on a loopback host is accepted
        response = await redeem(http, flow, code, verifier)
        assert response.status_code == 200, response.text
        issued = response.json()
        claims(base, issued["access_token"], LOOPBACK)
        response = await token(http, flow, grant_type="refresh_token", refresh_token=issued["refresh_token"])
        assert response.status_code == 200, response.text
        claims(base, response.json()["access_token"], LOOPBACK)
        invalid_target(
            await token(http, flow, grant_type="refresh_token", refresh_token=response.json()["refresh_token"], resource=MCP)
        )


async def test_without_resource_tokens_keep_the_servers_audience(any_server: ServerProcess) -> None:
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        code, verifier = await code_for(base, flow, [], scope="openid read_profile")
        response = await redeem(http, flow, code, verifier)
        assert response.status_code == 200, response.text
        issued = response.json()
        claims(base, issued["access_token"], base)
        assert (await introspected(http, flow, issued["access_token"]))["aud"] == base
        userinfo = await http.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {issued['access_token']}"})
        assert userinfo.status_code == 200 and userinfo.json()["sub"] == flow.user_id, userinfo.text
        # A grant bound to no resource may be used for one at a refresh (it had none to narrow from);
        # that token is the resource's, not grantd's: UserInfo refuses it.
        response = await token(http, flow, grant_type="refresh_token", refresh_token=issued["refresh_token"], resource=MCP)
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], MCP)["scope"] == "openid read_profile"
        userinfo = await http.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {response.json()['access_token']}"})
        assert userinfo.status_code == 401 and userinfo.json()["error"] == "invalid_token", userinfo.text
        response = await token(http, flow, grant_type="refresh_token", refresh_token=response.json()["refresh_token"])
        assert response.status_code == 200, response.text
        claims(base, response.json()["access_token"], base)


BAD_RESOURCES = {
    "relative": "/mcp",
    "fragment": "https://mcp.example.com/mcp#tools",
    "http off loopback": "http://mcp.example.com/mcp",
    "no host": "https:///mcp",
    "not http": "urn:example:mcp",
    "user info": "https://user@mcp.example.com/mcp",
    "white space": "https://mcp.example.com/m cp",
}


async def test_invalid_resources_are_sent_back_from_authorize_and_refused_at_token(any_server: ServerProcess) -> None:
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        for what, bad in BAD_RESOURCES.items():
            # At the authorization endpoint: an error redirect to the client, with state and iss.
            url, state, _ = authorization_url(base, flow, [MCP, bad])
            response = await http.get(url)
            assert response.status_code == 303, (what, response.text)
            params = answer(response.headers["location"], flow)
            assert params["error"] == "invalid_target", (what, params)
            assert params["state"] == state and params["iss"] == base

            # At the token endpoint: 400 invalid_target, for every grant.
            assert invalid_target(await token(http, flow, grant_type="client_credentials", resource=bad)), what
            assert invalid_target(await token(http, flow, grant_type="refresh_token", refresh_token="x", resource=bad)), what

        # One resource per token request: its aud is one URI.
        description = invalid_target(await token(http, flow, grant_type="client_credentials", resource=[MCP, FILES]))
        assert "One resource" in description
        # Too many at once.
        url, _, _ = authorization_url(base, flow, [f"{MCP}/{i}" for i in range(11)])
        assert answer((await http.get(url)).headers["location"], flow)["error"] == "invalid_target"
        # A NUL in one (it would split where the client did not repeat the parameter): a malformed request.
        url, _, _ = authorization_url(base, flow, [MCP + "\x00" + FILES])
        assert answer((await http.get(url)).headers["location"], flow)["error"] == "invalid_request"
        pushed = await http.post("/oauth2/par", data={"response_type": "code", "resource": MCP + "\x00" + FILES}, auth=(flow.app_id, flow.key_secret))
        assert pushed.status_code == 400 and pushed.json()["error"] == "invalid_request", pushed.text


async def test_pushed_request_carries_its_resources(any_server: ServerProcess) -> None:
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        verifier, challenge = pkce()
        request = {
            "response_type": "code", "redirect_uri": flow.redirect_uri, "scope": "read_profile", "state": "pushed",
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": [MCP, FILES],
        }
        response = await http.post("/oauth2/par", data=request, auth=(flow.app_id, flow.key_secret))
        assert response.status_code == 201, response.text
        url = f"{base}/oauth2/authorize?" + urlencode({"client_id": flow.app_id, "request_uri": response.json()["request_uri"]})
        code = answer(await consent(flow, url), flow)["code"]
        invalid_target(await redeem(http, flow, code, verifier, resource=ELSEWHERE))
        response = await redeem(http, flow, code, verifier, resource=FILES)
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], FILES)["scope"] == "read_profile"

        # A bad resource is refused when pushed, as the token endpoint refuses it.
        pushed = await http.post(
            "/oauth2/par", data={**request, "resource": [MCP, "https://mcp.example.com/#x"]}, auth=(flow.app_id, flow.key_secret)
        )
        assert "fragment" in invalid_target(pushed)


async def test_client_credentials_with_a_resource(any_server: ServerProcess) -> None:
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        response = await token(http, flow, grant_type="client_credentials", scope="read_profile", resource=MCP)
        assert response.status_code == 200, response.text
        issued = claims(base, response.json()["access_token"], MCP)
        assert issued["sub"] == flow.app_id and issued["scope"] == "read_profile"
        assert (await introspected(http, flow, response.json()["access_token"]))["aud"] == MCP
        response = await token(http, flow, grant_type="client_credentials")
        assert response.status_code == 200, response.text
        claims(base, response.json()["access_token"], base)


async def test_authlib_sends_resource(any_server: ServerProcess) -> None:
    """Authlib builds the authorization URL and the token request with ``resource``; the token's
    aud is the resource, verified with the published keys."""
    base = any_server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        with OAuth2Session(
            client_id=flow.app_id, client_secret=flow.key_secret, redirect_uri=flow.redirect_uri, scope="read_profile",
            code_challenge_method="S256",
        ) as oauth:
            verifier = secrets.token_urlsafe(48)
            url, _ = oauth.create_authorization_url(f"{base}/oauth2/authorize", code_verifier=verifier, resource=MCP)
            assert "resource=" in url
            callback = await consent(flow, url)
            issued = oauth.fetch_token(
                f"{base}/oauth2/token", authorization_response=callback, code_verifier=verifier, resource=MCP
            )
            assert claims(base, issued["access_token"], MCP)["sub"] == flow.user_id
            refreshed = oauth.refresh_token(f"{base}/oauth2/token", refresh_token=issued["refresh_token"], resource=MCP)
            claims(base, refreshed["access_token"], MCP)


# ---------------------------------------------------------------- the registered policy


async def test_registered_policy_accepts_registered_resources_with_their_permissions(registered: Registered) -> None:
    base = registered.server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client

        # MCP accepts read_profile only: asked for more, its token carries read_profile. The ID token
        # is the grant's (openid), not the resource's: it is issued all the same.
        code, verifier = await code_for(base, flow, [MCP], scope="openid read_profile write_data")
        response = await redeem(http, flow, code, verifier)
        assert response.status_code == 200, response.text
        issued = response.json()
        assert issued["scope"] == "read_profile" and issued["id_token"]
        assert claims(base, issued["access_token"], MCP)["permissions"] == ["read_profile"]
        response = await token(http, flow, grant_type="refresh_token", refresh_token=issued["refresh_token"], resource=MCP)
        assert response.status_code == 200, response.text
        refresh = response.json()["refresh_token"]
        assert claims(base, response.json()["access_token"], MCP)["scope"] == "read_profile" and response.json()["id_token"]

        # An https resource not registered: sent back from authorize, refused at token.
        url, _, _ = authorization_url(base, flow, [ELSEWHERE])
        params = answer((await http.get(url)).headers["location"], flow)
        assert params["error"] == "invalid_target" and "not a resource registered" in params["error_description"]
        assert "not a resource registered" in invalid_target(await token(http, flow, grant_type="client_credentials", resource=ELSEWHERE))
        # A registered resource that accepts none of what is asked.
        url, _, _ = authorization_url(base, flow, [MCP], scope="write_data")
        assert answer((await http.get(url)).headers["location"], flow)["error"] == "invalid_target"
        assert "accepts none" in invalid_target(
            await token(http, flow, grant_type="client_credentials", scope="write_data", resource=MCP)
        )
        response = await token(http, flow, grant_type="client_credentials", resource=MCP)
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], MCP)["scope"] == "read_profile"

        # Deleted by the operator: no further token for it, by naming it or not; the refresh token
        # is left unspent, and works again once it is registered again.
        assert cli_json(registered.env, "resources", "delete", "--uri", MCP) == {"uri": MCP, "deleted": True}
        invalid_target(await token(http, flow, grant_type="refresh_token", refresh_token=refresh))
        invalid_target(await token(http, flow, grant_type="refresh_token", refresh_token=refresh, resource=MCP))
        cli_json(registered.env, "resources", "create", "--uri", MCP, "--permissions", "read_profile,write_data")
        response = await token(http, flow, grant_type="refresh_token", refresh_token=refresh)
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], MCP)["scope"] == "read_profile write_data"
        listed = cli_json(registered.env, "resources", "list")["resources"]
        assert [(r["uri"], r["permissions"]) for r in listed] == [(MCP, "read_profile,write_data")]
        cli_json(registered.env, "resources", "delete", "--uri", MCP)
        cli_json(registered.env, "resources", "create", "--uri", MCP, "--permissions", "read_profile", "--description", "MCP")
        # The command line refuses what the API refuses.
        done = cli(registered.env, "resources", "create", "--uri", "https://x.example.com/#f", "--permissions", "read_profile")
        assert done.returncode == 1 and "invalid_request" in done.stderr
        done = cli(registered.env, "resources", "delete", "--uri", "https://never.example.com/")
        assert done.returncode == 1 and "not_found" in done.stderr


async def test_v1_resources_crud_is_the_operators(registered: Registered) -> None:
    base = registered.server.base_url
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        login = await http.post("/v1/auth/login", json={"email": registered.admin_email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        admin = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        _, someone_token = await sign_up(http)
        someone = {"Authorization": f"Bearer {someone_token}"}
        uri = f"https://api-{secrets.token_hex(4)}.example.com/v1"

        # Listing: anyone signed in; nobody else.
        assert (await http.get("/v1/resources")).status_code == 401
        listed = await http.get("/v1/resources", headers=someone)
        assert listed.status_code == 200 and MCP in [r["uri"] for r in listed.json()["data"]["resources"]]

        # Registering and deleting: the admin only.
        body = {"uri": uri, "permissions": "read_profile,write_data", "description": "Files API"}
        refused = await http.post("/v1/resources", json=body, headers=someone)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden", refused.text
        created = await http.post("/v1/resources", json=body, headers=admin)
        assert created.status_code == 200, created.text
        data = created.json()["data"]
        assert (data["uri"], data["permissions"], data["description"]) == (uri, "read_profile,write_data", "Files API")
        assert data["created_at"].endswith("Z")
        assert (await http.post("/v1/resources", json=body, headers=admin)).json()["error"] == "conflict"
        for bad in ({**body, "uri": "/relative"}, {**body, "uri": uri + "#f"}, {**body, "permissions": "launch_rockets"}, {"uri": uri}):
            response = await http.post("/v1/resources", json=bad, headers=admin)
            assert response.status_code == 400, (bad, response.text)
        listed = (await http.get("/v1/resources", headers=someone)).json()["data"]["resources"]
        [mine] = [(r["permissions"], r["description"]) for r in listed if r["uri"] == uri]
        assert mine == ("read_profile,write_data", "Files API")

        # The new resource is accepted at once, by every process of the deployment (read, not cached).
        dev = await developer(http)
        flow = await new_app(dev)
        response = await token(http, flow, grant_type="client_credentials", resource=uri)
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], uri)["scope"] == "read_profile write_data"

        refused = await http.delete("/v1/resources", params={"uri": uri}, headers=someone)
        assert refused.status_code == 403, refused.text
        deleted = await http.delete("/v1/resources", params={"uri": uri}, headers=admin)
        assert deleted.status_code == 200 and deleted.json()["data"] == {"uri": uri, "deleted": True}
        assert (await http.delete("/v1/resources", params={"uri": uri}, headers=admin)).status_code == 404
        invalid_target(await token(http, flow, grant_type="client_credentials", resource=uri))

        # The audit log tells the admin who registered and deleted it.
        events = (await http.get("/v1/audit", headers=admin)).json()["data"]["events"]
        mine = [(e["event"], e["detail"].get("resource")) for e in events if e["event"].startswith("resource_")]
        assert ("resource_registered", uri) in mine and ("resource_deleted", uri) in mine


@asynccontextmanager
async def browser_of(base: str, email: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of the person with ``email``, signed in through the /signin form."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as browser:
        page = await browser.get("/signin", params={"next": "/console/resources"})
        [form] = [f for f in parse_forms(page.text) if f.action == "/signin"]
        data = [(name, {"email": email, "password": PASSWORD}.get(name, value)) for name, value in form.inputs]
        signed = await post(browser, "/signin", data)
        assert signed.status_code == 303 and signed.headers["location"] == "/console/resources", signed.text
        yield browser


async def post(browser: httpx.AsyncClient, path: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """A form post of ``pairs`` (names may repeat), as a browser sends it."""
    return await browser.post(path, content=urlencode(pairs), headers={"Content-Type": "application/x-www-form-urlencoded"})


def form_posting_to(page: httpx.Response, action: str, **values: str) -> list[tuple[str, str]]:
    """What a browser posts from the page's one form to ``action``, ``values`` typed in."""
    forms = [f for f in parse_forms(page.text) if f.action == action and f.method == "post"]
    assert forms, f"no form posting to {action} in:\n{page.text}"
    return [(name, values.get(name, value)) for name, value in forms[0].inputs if name not in values] + list(values.items())


async def test_console_resources_page(registered: Registered) -> None:
    base = registered.server.base_url
    uri = f"https://console-{secrets.token_hex(4)}.example.com/mcp"
    async with browser_of(base, registered.admin_email) as admin:
        page = await admin.get("/console/resources")
        assert page.status_code == 200 and MCP in page.text and "Register a resource" in page.text
        # A refused field is shown next to it, and nothing is registered.
        refused = await post(
            admin, "/console/resources",
            [*form_posting_to(page, "/console/resources", uri="http://x.example.com/", description="D"), ("permissions", "read_profile")],
        )
        assert refused.status_code == 400
        assert re.search(r'id="uri"[^>]*aria-invalid="true"', refused.text) and "loopback" in refused.text
        created = await post(
            admin, "/console/resources",
            [*form_posting_to(page, "/console/resources", uri=uri, description="Console"), ("permissions", "write_data")],
        )
        assert created.status_code == 303 and created.headers["location"] == "/console/resources"
        page = await admin.get("/console/resources")
        assert uri in page.text and "Console" in page.text
        forms = [f for f in parse_forms(page.text) if f.action == "/console/resources/delete" and ("uri", uri) in f.inputs]
        assert len(forms) == 1
        deleted = await post(admin, "/console/resources/delete", forms[0].inputs)
        assert deleted.status_code == 303
        assert uri not in (await admin.get("/console/resources")).text
        # Without the page's CSRF token: refused.
        forged = await admin.post("/console/resources", data={"uri": uri, "permissions": "read_profile"})
        assert forged.status_code == 403 and uri not in (await admin.get("/console/resources")).text

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        email = unique_email()
        await sign_up(http, email)
    async with browser_of(base, email) as someone:
        page = await someone.get("/console/resources")
        assert page.status_code == 200 and MCP in page.text
        assert "Register a resource" not in page.text and "/console/resources/delete" not in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        refused = await someone.post("/console/resources", data={"csrf_token": csrf, "uri": uri, "permissions": "read_profile"})
        assert refused.status_code == 403
        refused = await someone.post("/console/resources/delete", data={"csrf_token": csrf, "uri": MCP})
        assert refused.status_code == 403
        assert MCP in (await someone.get("/console/resources")).text


async def test_the_clients_errors_come_first_and_an_assertion_is_checked_once(registered: Registered) -> None:
    """A bad secret with a bad resource is invalid_client; a private_key_jwt client naming a
    resource (or leaving out its grant's only one) is proven once, its assertion's jti spent once."""
    base = registered.server.base_url
    async with dev_on(base) as dev:
        flow = await new_app(dev)
        http = flow.client
        wrong = await http.post("/oauth2/token", data={"grant_type": "client_credentials", "resource": "/mcp"}, auth=(flow.app_id, "x" * 43))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client", wrong.text
        wrong = await http.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "r", "resource": ELSEWHERE},
            auth=(flow.app_id, "x" * 43),
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client", wrong.text

        key = ec.generate_private_key(ec.SECP256R1())
        signed = await new_app(dev, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]})
        code, verifier = await code_for(base, signed, [MCP])

        def by_assertion(**fields: str) -> dict[str, str]:
            return {
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion(key, signed.app_id, aud=base), **fields,
            }

        response = await http.post("/oauth2/token", data=by_assertion(
            grant_type="authorization_code", code=code, code_verifier=verifier, redirect_uri=signed.redirect_uri,
        ))
        assert response.status_code == 200, response.text
        assert claims(base, response.json()["access_token"], MCP)["scope"] == "read_profile"
        response = await http.post("/oauth2/token", data=by_assertion(
            grant_type="refresh_token", refresh_token=response.json()["refresh_token"], resource=MCP,
        ))
        assert response.status_code == 200, response.text
        claims(base, response.json()["access_token"], MCP)
