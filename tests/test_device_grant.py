"""The device authorization grant (RFC 8628) against real `grantd serve` processes, on SQLite and on
PostgreSQL: the device authorization endpoint (§3.1–§3.2), the person's pages (§3.3), every answer
of the token endpoint to a polling device (§3.4–§3.5: authorization_pending, slow_down with a
growing interval, access_denied, expired_token, invalid_grant), a device code redeemed exactly once
under concurrent polls, codes hashed at rest, and user-code guesses rate limited per address and
for everyone together (§5.1); a public device's refresh token bound to its DPoP key (RFC 9449 §5),
and ``resource`` at the device's token request (RFC 8707). The person here is an HTTP client following the pages' forms; in
Chromium: tests/browser/test_device.py; with openid-client 6: tests/test_interop_device.py."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx
import jwt
import pytest

from sqlalchemy import func, select

import acting_user
from acting_user import parse_forms
from grantd.core import retention
from grantd.store.schema import device_codes
from support.dpop import Holder, claims_of
from support.neucron import PASSWORD, sign_up, unique_email
from support.servers import ServerProcess, assert_clean_logs, server_on_new_sqlite, start_server
from test_resource_indicators import cli_json
from test_retention import fresh  # noqa: F401 - the fixture: the in-process app on a database of its own

pytestmark = pytest.mark.db

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
INTERVAL = 2  # the servers' GRANTD_DEVICE_CODE_INTERVAL here: short, so that the tests wait little
MCP = "https://mcp.example.com/mcp"
FILES = "https://files.example.com/api"


# ---------------------------------------------------------------- servers, apps, people


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, secret_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server for the module on each database (PostgreSQL: a fresh database of the session)."""
    env = {"GRANTD_DEVICE_CODE_INTERVAL": str(INTERVAL)}
    if request.param == "sqlite":
        with server_on_new_sqlite(tmp_path_factory, secret_key, "device-sqlite", env=env) as started:
            yield started
        return
    url = request.getfixturevalue("postgres_url")
    started = start_server(url, secret_key, tmp_path_factory.mktemp("device-postgres"), env=env)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


class App:
    def __init__(self, client_id: str, secret: str | None) -> None:
        self.client_id, self.secret = client_id, secret

    def auth(self) -> dict[str, Any]:
        """The client authentication: client_secret_basic, or a public client's bare client_id."""
        return {"auth": (self.client_id, self.secret)} if self.secret else {}

    def form(self, **fields: str) -> dict[str, str]:
        return fields if self.secret else {"client_id": self.client_id, **fields}

    async def start(self, api: httpx.AsyncClient, scope: str | None = "read_profile") -> dict[str, Any]:
        """A device authorization request; its 200 body."""
        response = await api.post(
            "/oauth2/device_authorization", data=self.form(**({"scope": scope} if scope else {})), **self.auth()
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def poll(
        self, api: httpx.AsyncClient, device_code: str, *, dpop: str | None = None, **fields: str
    ) -> httpx.Response:
        """A poll of the token endpoint; ``dpop``: a DPoP proof sent with it; ``fields``: more parameters."""
        return await api.post(
            "/oauth2/token", data=self.form(grant_type=GRANT_TYPE, device_code=device_code, **fields),
            headers={"DPoP": dpop} if dpop else None, **self.auth(),
        )

    async def refresh(
        self, api: httpx.AsyncClient, refresh_token: str, *, dpop: str | None = None, **fields: str
    ) -> httpx.Response:
        return await api.post(
            "/oauth2/token", data=self.form(grant_type="refresh_token", refresh_token=refresh_token, **fields),
            headers={"DPoP": dpop} if dpop else None, **self.auth(),
        )


async def new_app(api: httpx.AsyncClient, *, public: bool = False, name: str = "Living Room TV") -> App:
    _, dev = await sign_up(api)
    body = {
        "name": name, "redirect_uris": ["https://tv.example.com/cb"], "permissions": "read_profile,write_data",
        "client_type": "public" if public else "confidential",
    }
    response = await api.post("/v1/apps", json=body, headers={"Authorization": dev})
    assert response.status_code == 200, response.text
    client_id = response.json()["data"]["app_id"]
    if public:
        return App(client_id, None)
    response = await api.post(f"/v1/apps/{client_id}/keys", headers={"Authorization": dev})
    assert response.status_code == 200, response.text
    return App(client_id, response.json()["data"]["key_secret"])


async def new_person(api: httpx.AsyncClient) -> tuple[str, str]:
    email = unique_email()
    user_id, _ = await sign_up(api, email)
    return user_id, email


def form_of(response: httpx.Response, action: str) -> list[tuple[str, str]]:
    """The inputs of the page's POST form to ``action``, as the page filled them in."""
    forms = [f for f in parse_forms(response.text) if f.method == "post" and f.path(str(response.url)) == action]
    assert forms, f"no form posting to {action} on {response.url}:\n{response.text[:1500]}"
    return forms[0].inputs


async def submit(http: httpx.AsyncClient, response: httpx.Response, action: str, **fill: str) -> httpx.Response:
    inputs = form_of(response, action)
    data = [(name, fill.pop(name, value)) for name, value in inputs] + list(fill.items())
    return await http.post(
        urljoin(str(response.url), action), content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


async def enter_code(http: httpx.AsyncClient, typed: str) -> httpx.Response:
    """Open the Code page, type ``typed`` and press Continue."""
    page = await http.get("/device")
    assert page.status_code == 200, page.text
    return await submit(http, page, "/device", user_code=typed)


async def decide(
    http: httpx.AsyncClient, verification_uri_complete: str, email: str, decision: str = "approve"
) -> httpx.Response:
    """A person at the device's link: Continue, sign in if asked, then Approve or Deny; the last page."""
    page = await http.get(verification_uri_complete)
    assert page.status_code == 200, page.text
    filled = dict(form_of(page, "/device"))
    response = await submit(http, page, "/device", user_code=filled["user_code"])
    if response.status_code == 303:  # nobody signed in: the sign-in page, which comes back
        location = response.headers["location"]
        assert location.startswith("/signin?next="), location
        signin = await http.get(location)
        response = await submit(http, signin, "/signin", email=email, password=PASSWORD)
        assert response.status_code == 303, response.text
        assert response.headers["location"].startswith("/device/approve?user_code="), response.headers["location"]
        response = await http.get(response.headers["location"])
    assert response.status_code == 200, response.text
    return await submit(http, response, "/device/approve", decision=decision)


def error_of(response: httpx.Response) -> str:
    assert response.status_code in (400, 401), response.text
    assert "no-store" in response.headers.get("cache-control", "")
    return str(response.json()["error"])


# ---------------------------------------------------------------- discovery, §3.1–§3.2


async def test_discovery_names_the_endpoint_and_the_grant(api: httpx.AsyncClient, server: ServerProcess) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        document = (await api.get(path)).json()
        assert document["device_authorization_endpoint"] == f"{server.base_url}/oauth2/device_authorization"
        assert GRANT_TYPE in document["grant_types_supported"]


async def test_the_device_authorization_response(api: httpx.AsyncClient, server: ServerProcess) -> None:
    app = await new_app(api)
    response = await api.post("/oauth2/device_authorization", data={"scope": "read_profile"}, auth=(app.client_id, app.secret))
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert set(body) == {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval"}
    assert USER_CODE.match(body["user_code"]), body["user_code"]
    assert len(body["device_code"]) >= 43
    assert body["verification_uri"] == f"{server.base_url}/device"
    assert body["verification_uri_complete"] == f"{server.base_url}/device?user_code={body['user_code']}"
    assert body["expires_in"] == 600 and body["interval"] == INTERVAL
    # Each request gets codes of its own.
    again = await app.start(api)
    assert again["device_code"] != body["device_code"] and again["user_code"] != body["user_code"]
    # A public client authenticates by its client_id alone.
    public = await new_app(api, public=True)
    assert USER_CODE.match((await public.start(api))["user_code"])


async def test_the_device_authorization_endpoint_refuses_what_it_must(api: httpx.AsyncClient) -> None:
    app, public = await new_app(api), await new_app(api, public=True)
    endpoint = "/oauth2/device_authorization"
    wrong_secret = await api.post(endpoint, data={"scope": "read_profile"}, auth=(app.client_id, app.secret + "x"))
    assert error_of(wrong_secret) == "invalid_client" and wrong_secret.status_code == 401
    assert "www-authenticate" in wrong_secret.headers
    assert error_of(await api.post(endpoint, data={"client_id": "no-such-app"})) == "invalid_client"
    assert error_of(await api.post(endpoint, data={"client_id": app.client_id})) == "invalid_client"  # no secret
    assert error_of(await api.post(endpoint, data={"scope": "read_profile"})) == "invalid_client"  # no client at all
    assert error_of(await api.post(endpoint, data={})) == "invalid_request"  # no form at all
    beyond = await api.post(endpoint, data={"client_id": public.client_id, "scope": "manage_notifications"})
    assert error_of(beyond) == "invalid_scope", beyond.text
    unknown = await api.post(endpoint, data={"client_id": public.client_id, "scope": "read_profile launch_missiles"})
    assert error_of(unknown) in ("invalid_scope", "invalid_request"), unknown.text
    repeated = await api.post(endpoint, content="client_id=a&client_id=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert error_of(repeated) == "invalid_request"
    not_a_form = await api.post(endpoint, json={"client_id": public.client_id})
    assert error_of(not_a_form) == "invalid_request"
    assert (await api.get(endpoint)).status_code == 405


# ---------------------------------------------------------------- §3.3–§3.5: approve, deny, poll


async def test_approved_the_device_gets_tokens_once(api: httpx.AsyncClient, server: ServerProcess) -> None:
    app = await new_app(api, public=True)
    user_id, email = await new_person(api)
    started = await app.start(api, scope="openid read_profile")
    assert error_of(await app.poll(api, started["device_code"])) == "authorization_pending"

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        done = await decide(browser, started["verification_uri_complete"], email, "approve")
    assert done.status_code == 200, done.text
    assert "You can return to your device" in done.text

    response = await app.poll(api, started["device_code"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid read_profile"
    assert tokens["refresh_token"] and tokens["id_token"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id and claims["client_id"] == app.client_id and claims["iss"] == server.base_url
    jwks = jwt.PyJWKSet.from_dict((await api.get("/.well-known/jwks.json")).json())
    header = jwt.get_unverified_header(tokens["id_token"])
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    id_claims = jwt.decode(tokens["id_token"], key.key, algorithms=[header["alg"]], audience=app.client_id, issuer=server.base_url)
    assert id_claims["sub"] == user_id and "nonce" not in id_claims and id_claims["auth_time"] <= id_claims["iat"]
    userinfo = await api.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == user_id

    # A device code is redeemed once.
    assert error_of(await app.poll(api, started["device_code"])) == "invalid_grant"
    # The refresh token works as any other.
    refreshed = await api.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app.client_id}
    )
    assert refreshed.status_code == 200, refreshed.text
    # The person's consent is recorded: the app is among their grants.
    _, token = await sign_in_api(api, email)
    grants = (await api.get("/v1/grants", headers={"Authorization": f"Bearer {token}"})).json()["data"]["grants"]
    assert [(g["app_id"], g["permissions"]) for g in grants] == [(app.client_id, "openid,read_profile")]
    assert_clean_logs([server])


async def approved(api: httpx.AsyncClient, server: ServerProcess, app: App, scope: str = "read_profile") -> str:
    """A device request of ``app`` a new person approved: its device code."""
    _, email = await new_person(api)
    started = await app.start(api, scope=scope)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        done = await decide(browser, started["verification_uri_complete"], email, "approve")
    assert done.status_code == 200, done.text
    return str(started["device_code"])


async def test_a_public_devices_tokens_are_bound_to_its_dpop_key(api: httpx.AsyncClient, server: ServerProcess) -> None:
    """RFC 9449 §5: a public client's refresh token is bound to the key of its proof, so a stolen
    one refreshes for nobody else."""
    app, holder = await new_app(api, public=True), Holder()
    token_endpoint = f"{server.base_url}/oauth2/token"
    device_code = await approved(api, server, app)
    response = await app.poll(api, device_code, dpop=holder.proof("POST", token_endpoint))
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "DPoP" and claims_of(tokens["access_token"])["cnf"]["jkt"] == holder.jkt
    assert error_of(await app.refresh(api, tokens["refresh_token"])) == "invalid_grant"
    other = await app.refresh(api, tokens["refresh_token"], dpop=Holder().proof("POST", token_endpoint))
    assert error_of(other) == "invalid_grant"
    refreshed = await app.refresh(api, tokens["refresh_token"], dpop=holder.proof("POST", token_endpoint))
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["token_type"] == "DPoP"
    assert claims_of(refreshed.json()["access_token"])["cnf"]["jkt"] == holder.jkt
    assert_clean_logs([server])


# ---------------------------------------------------------------- RFC 8707: resource at the device's token request


def invalid_target(response: httpx.Response) -> str:
    assert response.status_code == 400 and error_of(response) == "invalid_target", response.text
    return str(response.json()["error_description"])


async def test_a_resource_is_the_device_tokens_audience_and_its_refreshes_stay_there(
    api: httpx.AsyncClient, server: ServerProcess
) -> None:
    app = await new_app(api)
    device_code = await approved(api, server, app, scope="read_profile write_data")
    # Not a resource indicator (RFC 8707 §2): refused, the device code left unspent.
    for wrong in (f"{MCP}#tools", "/mcp", "mcp.example.com/mcp", "http://mcp.example.com/mcp"):
        invalid_target(await app.poll(api, device_code, resource=wrong))
    response = await app.poll(api, device_code, resource=MCP)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["scope"] == "read_profile write_data"
    claims = claims_of(tokens["access_token"])
    assert claims["aud"] == MCP and claims["iss"] == server.base_url
    introspected = await api.post("/oauth2/introspect", data={"token": tokens["access_token"]}, auth=(app.client_id, app.secret))
    assert introspected.json()["active"] is True and introspected.json()["aud"] == MCP
    # The resource is the grant's: a refresh gets tokens for it, named or not, never for another.
    assert "not one of the resources" in invalid_target(await app.refresh(api, tokens["refresh_token"], resource=FILES))
    named = await app.refresh(api, tokens["refresh_token"], resource=MCP)
    assert named.status_code == 200, named.text
    assert claims_of(named.json()["access_token"])["aud"] == MCP
    unnamed = await app.refresh(api, named.json()["refresh_token"])
    assert unnamed.status_code == 200, unnamed.text
    assert claims_of(unnamed.json()["access_token"])["aud"] == MCP
    # Without resource, the token keeps the server's audience.
    plain = await app.poll(api, await approved(api, server, app))
    assert plain.status_code == 200, plain.text
    assert claims_of(plain.json()["access_token"])["aud"] == server.base_url
    assert_clean_logs([server])


@pytest.fixture(scope="module")
def registered_only(secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """GRANTD_RESOURCE_POLICY=registered, with MCP registered (by `grantd resources create`) for read_profile only."""
    data_dir = tmp_path_factory.mktemp("device-registered")
    url = f"sqlite+aiosqlite:///{data_dir / 'grantd.db'}"
    env = {**os.environ, "GRANTD_DATABASE_URL": url, "GRANTD_SECRET_KEY": secret_key, "GRANTD_DATA_DIR": str(data_dir)}
    cli_json(env, "resources", "create", "--uri", MCP, "--permissions", "read_profile")
    started = start_server(
        url, secret_key, data_dir, env={"GRANTD_DEVICE_CODE_INTERVAL": str(INTERVAL), "GRANTD_RESOURCE_POLICY": "registered"}
    )
    try:
        yield started
    finally:
        started.stop()


async def test_under_the_registered_policy_a_device_gets_what_its_resource_accepts(registered_only: ServerProcess) -> None:
    server = registered_only
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as api:
        app = await new_app(api)
        device_code = await approved(api, server, app, scope="read_profile write_data")
        assert "not a resource registered" in invalid_target(await app.poll(api, device_code, resource=FILES))
        response = await app.poll(api, device_code, resource=MCP)
        assert response.status_code == 200, response.text
        tokens = response.json()
        claims = claims_of(tokens["access_token"])
        # Narrowed to what the resource accepts; the refresh token keeps the whole grant.
        assert claims["aud"] == MCP and tokens["scope"] == "read_profile" and claims["scope"] == "read_profile"
        refreshed = await app.refresh(api, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert claims_of(refreshed.json()["access_token"])["aud"] == MCP and refreshed.json()["scope"] == "read_profile"
        # A resource that accepts none of the permissions granted: refused, the device code unspent.
        only_write = await approved(api, server, app, scope="write_data")
        assert "accepts none" in invalid_target(await app.poll(api, only_write, resource=MCP))
        assert (await app.poll(api, only_write)).status_code == 200
    assert_clean_logs([server])


async def sign_in_api(api: httpx.AsyncClient, email: str) -> tuple[str, str]:
    response = await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data["user_id"], data["access_token"]


async def test_denied_the_device_is_told_so(api: httpx.AsyncClient, server: ServerProcess) -> None:
    app = await new_app(api)
    _, email = await new_person(api)
    started = await app.start(api)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        done = await decide(browser, started["verification_uri_complete"], email, "deny")
        assert done.status_code == 200 and "Access denied" in done.text
        # The code was answered: typed again, it names nothing.
        again = await enter_code(browser, started["user_code"])
        assert again.status_code == 400 and "That code is not right, or it has expired" in again.text
    assert error_of(await app.poll(api, started["device_code"])) == "access_denied"
    assert error_of(await app.poll(api, started["device_code"])) == "access_denied"


async def test_access_withdrawn_before_the_device_came_back_is_access_denied(
    api: httpx.AsyncClient, server: ServerProcess
) -> None:
    app = await new_app(api)
    _, email = await new_person(api)
    started = await app.start(api)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        assert (await decide(browser, started["verification_uri_complete"], email)).status_code == 200
    _, token = await sign_in_api(api, email)
    revoked = await api.delete(f"/v1/grants/{app.client_id}", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 200, revoked.text
    assert error_of(await app.poll(api, started["device_code"])) == "access_denied"


async def test_the_approval_page_names_the_app_and_warns(api: httpx.AsyncClient, server: ServerProcess) -> None:
    app = await new_app(api, name="Photo Frame")
    _, email = await new_person(api)
    started = await app.start(api, scope="read_profile write_data")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        signin = await browser.get("/signin")
        signed_in = await submit(browser, signin, "/signin", email=email, password=PASSWORD)
        assert signed_in.status_code == 303
        # Signed in already: lower case and spaces are the same code, and Continue shows the approval page.
        typed = started["user_code"].lower().replace("-", " ")
        page = await enter_code(browser, typed)
        assert page.status_code == 200, page.text
        text = " ".join(page.text.split())
        assert "Photo Frame</span> on a device wants to access your account" in text
        assert "Only continue if you started this on your device" in text
        assert started["user_code"] in text
        assert "Read your profile" in text and "write_data" in text
        assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # The decision needs the page's CSRF token.
        inputs = dict(form_of(page, "/device/approve"))
        forged = await browser.post("/device/approve", data={"user_code": inputs["user_code"], "decision": "approve"})
        assert forged.status_code == 403
    assert error_of(await app.poll(api, started["device_code"])) == "authorization_pending"


async def test_polling_faster_than_the_interval_is_slow_down_and_the_interval_grows(api: httpx.AsyncClient) -> None:
    app = await new_app(api)
    started = await app.start(api)
    code = started["device_code"]
    assert error_of(await app.poll(api, code)) == "authorization_pending"
    slow = await app.poll(api, code)
    assert error_of(slow) == "slow_down"
    assert f"{INTERVAL + 5} seconds" in slow.json()["error_description"]
    # Past the first interval, but not the grown one (§3.5: +5 seconds): slow_down again.
    await asyncio.sleep(INTERVAL + 1)
    assert error_of(await app.poll(api, code)) == "slow_down"


async def test_wrong_device_codes_are_invalid_grant_and_the_client_comes_first(api: httpx.AsyncClient) -> None:
    app, other = await new_app(api), await new_app(api)
    started = await app.start(api)
    assert error_of(await app.poll(api, "no-such-device-code")) == "invalid_grant"
    # Another app's device code is no code of this app's, and the owner's is left as it was.
    assert error_of(await other.poll(api, started["device_code"])) == "invalid_grant"
    assert error_of(await app.poll(api, started["device_code"])) == "authorization_pending"
    missing = await api.post("/oauth2/token", data={"grant_type": GRANT_TYPE}, auth=(app.client_id, app.secret))
    assert error_of(missing) == "invalid_request" and "device_code" in missing.json()["error_description"]
    wrong_client = await api.post(
        "/oauth2/token", data={"grant_type": GRANT_TYPE, "device_code": started["device_code"]}, auth=(app.client_id, "gks_nope")
    )
    assert error_of(wrong_client) == "invalid_client"


async def test_concurrent_polls_redeem_an_approved_code_once(api: httpx.AsyncClient, server: ServerProcess) -> None:
    app = await new_app(api)
    _, email = await new_person(api)
    started = await app.start(api)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        assert (await decide(browser, started["verification_uri_complete"], email)).status_code == 200
    limits = httpx.Limits(max_connections=12)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as polling:
        await asyncio.gather(*(polling.get("/healthz") for _ in range(12)))  # open the connections first
        answers = await asyncio.gather(*(app.poll(polling, started["device_code"]) for _ in range(12)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [400] * 11, [r.text for r in answers]
    assert {r.json()["error"] for r in answers if r.status_code == 400} == {"invalid_grant"}
    token = next(r.json()["access_token"] for r in answers if r.status_code == 200)
    introspected = await api.post("/oauth2/introspect", data={"token": token}, auth=(app.client_id, app.secret))
    assert introspected.json()["active"] is True
    assert_clean_logs([server])


async def test_a_wrong_code_shows_the_code_page_again(api: httpx.AsyncClient, server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        page = await browser.get("/device?user_code=BCDF-GHJK")
        assert page.status_code == 200
        assert dict(form_of(page, "/device"))["user_code"] == "BCDF-GHJK"  # filled in from the link
        for typed, message in (
            ("BCDF-GHJK", "That code is not right, or it has expired"),
            ("AEIO-U123", "Enter the 8-letter code your device shows"),
            ("", "Enter the code your device shows"),
        ):
            again = await enter_code(browser, typed)
            assert again.status_code == 400, again.text
            assert message in again.text and 'aria-invalid="true"' in again.text
            assert form_of(again, "/device")
        forged = await browser.post("/device", data={"user_code": "BCDF-GHJK"})
        assert forged.status_code == 403


async def test_hostile_inputs_are_refused_never_a_server_error(api: httpx.AsyncClient, server: ServerProcess) -> None:
    app = await new_app(api, public=True)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    odd = ["%00", "BCDF%00GHJK", "x" * 5000, "%FF%FE", "BCDF-GHJK" * 8, "%E2%80%AE" * 10, "b%20c%20d%20f%20g%20h%20j%20k%2D"]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as browser:
        page = await browser.get("/device")
        csrf = dict(form_of(page, "/device"))["csrf_token"]
        answers = []
        for value in odd:
            answers += [
                await browser.post("/device", content=f"csrf_token={csrf}&user_code={value}", headers=form),
                await browser.post("/device/approve", content=f"user_code={value}&decision=approve", headers=form),
                await browser.get(f"/device?user_code={value}"),
                await browser.get(f"/device/approve?user_code={value}"),
                await api.post("/oauth2/device_authorization", content=f"client_id={app.client_id}&scope={value}", headers=form),
                await api.post("/oauth2/device_authorization", content=f"client_id={value}", headers=form),
                await api.post(
                    "/oauth2/token", content=f"client_id={app.client_id}&grant_type={GRANT_TYPE}&device_code={value}", headers=form
                ),
            ]
        answers += [
            await browser.post("/device", content=f"csrf_token={csrf}&user_code=A&user_code=B", headers=form),
            await browser.post("/device", json={"user_code": "BCDF-GHJK"}),
            await api.post("/oauth2/device_authorization", content=b"\xff\xfe=\x00", headers=form),
        ]
    # Every POST is refused with a 4xx, but a decision without a session, which goes to sign-in; a
    # GET shows the Code page (200) or sends to sign-in (303).
    to_signin = [r for r in answers if r.status_code == 303]
    assert all(r.headers["location"].startswith("/signin?next=%2Fdevice%2Fapprove") for r in to_signin)
    refused = [
        (str(r.request.url)[:100], r.status_code)
        for r in answers
        if r.request.method == "POST" and r.request.url.path != "/device/approve" and not 400 <= r.status_code < 500
    ]
    assert refused == []
    assert {r.status_code for r in answers if r.request.method == "GET"} <= {200, 303}
    assert_clean_logs([server])


# ---------------------------------------------------------------- expiry, hashing, guessing


@pytest.fixture(scope="module")
def short_lived(secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose device codes live 5 seconds."""
    with server_on_new_sqlite(tmp_path_factory, secret_key, "device-short", env={"GRANTD_DEVICE_CODE_TTL": "5"}) as started:
        yield started


@pytest.fixture
def guarded(secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of the test's own, whose user-code limits are small: 3 wrong codes per address, 5
    from everyone, per 15 minutes."""
    env = {"GRANTD_RATE_LIMIT_USER_CODE_PER_ADDRESS": "3", "GRANTD_RATE_LIMIT_USER_CODE_GLOBAL": "5"}
    with server_on_new_sqlite(tmp_path_factory, secret_key, "device-guarded", env=env) as started:
        yield started


async def test_an_expired_device_code_is_expired_token(short_lived: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=short_lived.base_url, timeout=30) as api:
        app = await new_app(api)
        started = await app.start(api)
        assert started["expires_in"] == 5
        await asyncio.sleep(6)
        assert error_of(await app.poll(api, started["device_code"])) == "expired_token"
        typed = await enter_code(api, started["user_code"])  # the person came too late
        assert typed.status_code == 400 and "That code is not right, or it has expired" in typed.text


async def test_codes_are_stored_only_as_keyed_hashes(short_lived: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=short_lived.base_url, timeout=30) as api:
        app = await new_app(api)
        started = await app.start(api)
    data_dir = short_lived.log_path.parent
    stored = b"".join(path.read_bytes() for path in Path(data_dir).glob("grantd.db*"))
    assert b"device_codes" in stored
    for value in (started["device_code"], started["user_code"], started["user_code"].replace("-", "")):
        assert value.encode() not in stored


def browser_at(server: ServerProcess, address: str) -> httpx.AsyncClient:
    """A person's browser connecting from ``address`` (a loopback address: the server sees it as the client's)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=server.base_url, timeout=30, transport=transport)


async def test_user_code_guesses_are_rate_limited_per_address_and_for_everyone(guarded: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=guarded.base_url, timeout=30) as api:
        app = await new_app(api)
        right = (await app.start(api))["user_code"]
    async with browser_at(guarded, "127.0.0.2") as first, browser_at(guarded, "127.0.0.3") as second:
        # A right code costs nothing: it gives its attempt back.
        assert (await enter_code(first, right)).status_code == 303
        for _ in range(3):
            assert (await enter_code(first, "BCDF-GHJK")).status_code == 400
        # Over this address's limit: even the right code is refused, and the page says for how long.
        locked = await enter_code(first, right)
        assert locked.status_code == 429, locked.text
        assert int(locked.headers["retry-after"]) > 0 and "Too many wrong codes were entered" in locked.text
        assert form_of(locked, "/device")
        # Another address: its own count is low, but everyone's together reaches 5.
        assert (await enter_code(second, "BCDF-GHJL")).status_code == 400
        refused = await enter_code(second, right)
        assert refused.status_code == 429, refused.text
    # What cannot be a code is never counted nor looked up.
    async with browser_at(guarded, "127.0.0.4") as third:
        assert (await enter_code(third, "not a code")).status_code == 400
    assert_clean_logs([guarded])


# ---------------------------------------------------------------- pruning


async def test_expired_device_requests_are_pruned(fresh: tuple[Any, httpx.AsyncClient]) -> None:
    application, client = fresh
    ctx = application.state.ctx
    flow = await acting_user.new_app(await acting_user.developer(client))
    response = await client.post("/oauth2/device_authorization", data={"scope": "read_profile"}, auth=(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text

    async def stored() -> int:
        async with ctx.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(device_codes))).scalar_one())

    assert await stored() == 1
    assert (await retention.prune(ctx, expired_before=ctx.now() + 365 * 86400)).device_codes == 0  # not expired yet
    now = ctx.now()
    ctx.now = lambda: now + 2 * 86400  # a day past its expiry
    assert (await retention.prune(ctx)).device_codes == 1
    assert await stored() == 0
