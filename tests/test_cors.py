"""CORS for browser-based clients, as a browser sees it, against a real `grantd serve`: preflights,
and the answers of the open documents and of the client-based endpoints to an allowed origin (a
public client's redirect URI origin; at UserInfo, any client's), to an origin not allowed (refused
before the code is spent, no CORS headers), and to a confidential client (never); and no CORS on
the cookie-authenticated routes. The rule's own corner cases (origins of redirect URIs) at the end;
a real Chromium calling grantd across origins is in tests/browser/test_cors.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from acting_user import developer, new_app
from grantd.core import cors
from support.dpop import Holder, code_for
from support.neucron import Flow, new_flow
from support.servers import ServerProcess, start_server

pytestmark = pytest.mark.db

SPA = "https://spa.example"  # a public client's site: the origin of its redirect URI
ELSEWHERE = "https://elsewhere.example"
FORM = "application/x-www-form-urlencoded"
CLIENT_PATHS = ["/oauth2/token", "/oauth2/revoke", "/oauth2/par", "/oauth2/device_authorization", "/oauth2/userinfo"]
OPEN_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/.well-known/jwks.json"]


@pytest.fixture(scope="module")
def server(database_url: str, secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `grantd serve` on the session's database, offering open dynamic registration."""
    env = {"GRANTD_DYNAMIC_REGISTRATION": "open", "GRANTD_RATE_LIMIT_REGISTRATION_PER_ADDRESS": "1000000"}
    started = start_server(database_url, secret_key, tmp_path_factory.mktemp("cors"), env=env)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
async def dev(server: ServerProcess) -> AsyncIterator[Flow]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        template = await developer(http)
        template.redirect_uri = f"{SPA}/callback"
        yield template


@pytest.fixture
async def spa(dev: Flow) -> Flow:
    """A public client whose redirect URI is on SPA; it sends its client_id alone."""
    app = await new_app(dev, client_type="public")
    app.key_secret = ""
    return app


@pytest.fixture
async def backend(dev: Flow) -> Flow:
    """A confidential client with the same redirect URI origin (its server holds the secret)."""
    return await new_app(dev, client_type="confidential")


def preflight(client: httpx.AsyncClient, path: str, origin: str, method: str = "POST", headers: str = "dpop") -> Any:
    return client.options(
        path, headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
    )


def assert_no_cors(response: httpx.Response) -> None:
    present = [name for name in response.headers if name.lower().startswith("access-control-")]
    assert present == [], (response.request.method, response.request.url, present)


def assert_allowed(response: httpx.Response, origin: str) -> None:
    assert response.headers["access-control-allow-origin"] == origin, response.headers
    assert "Origin" in response.headers.get_list("vary"), response.headers
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"dpop-nonce", "www-authenticate"} <= exposed
    assert "access-control-allow-credentials" not in response.headers


def token_form(app: Flow, code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri, "code_verifier": verifier,
        "client_id": app.app_id,
    }


# ---------------------------------------------------------------- open to any origin


@pytest.mark.parametrize("path", OPEN_PATHS)
async def test_the_public_documents_are_readable_from_any_origin(dev: Flow, path: str) -> None:
    client = dev.client
    answer = await preflight(client, path, ELSEWHERE, "GET", "content-type")
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["access-control-allow-methods"] == "GET"
    assert answer.headers["access-control-max-age"] == str(cors.MAX_AGE)
    assert "access-control-allow-credentials" not in answer.headers
    response = await client.get(path, headers={"Origin": ELSEWHERE})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_dynamic_registration_is_readable_from_any_origin(dev: Flow) -> None:
    client = dev.client
    answer = await preflight(client, "/oauth2/register", ELSEWHERE, "POST", "content-type,authorization")
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    allowed = {name.strip().lower() for name in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "dpop"} <= allowed
    metadata = {"redirect_uris": [f"{ELSEWHERE}/cb"], "token_endpoint_auth_method": "none", "client_name": "Inspector"}
    registered = await client.post("/oauth2/register", json=metadata, headers={"Origin": ELSEWHERE})
    assert registered.status_code == 201, registered.text
    assert registered.headers["access-control-allow-origin"] == "*"
    # RFC 7592: the registration, read with its registration access token, from the page too
    body = registered.json()
    path = f"/oauth2/register/{body['client_id']}"
    answer = await preflight(client, path, ELSEWHERE, "GET", "authorization")
    assert answer.status_code == 204 and set(answer.headers["access-control-allow-methods"].split(", ")) == {"GET", "PUT", "DELETE"}
    read = await client.get(path, headers={"Origin": ELSEWHERE, "Authorization": f"Bearer {body['registration_access_token']}"})
    assert read.status_code == 200 and read.headers["access-control-allow-origin"] == "*"
    refused = await client.get(path, headers={"Origin": ELSEWHERE, "Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()


# ---------------------------------------------------------------- client-based: preflights


@pytest.mark.parametrize("path", CLIENT_PATHS)
async def test_a_client_based_endpoint_answers_any_preflight(dev: Flow, path: str) -> None:
    """The client is named in the request's body, which a preflight has not: every origin may ask,
    the request itself is then judged."""
    for origin in (SPA, ELSEWHERE):
        answer = await preflight(dev.client, path, origin, "POST", "content-type,dpop,authorization")
        assert answer.status_code == 204, answer.text
        assert answer.content == b""
        assert answer.headers["access-control-allow-origin"] == origin
        assert "Origin" in answer.headers.get_list("vary")
        methods = set(answer.headers["access-control-allow-methods"].split(", "))
        assert methods == ({"GET", "POST"} if path == "/oauth2/userinfo" else {"POST"})
        assert answer.headers["access-control-allow-headers"] == "Authorization, Content-Type, DPoP"
        assert int(answer.headers["access-control-max-age"]) > 0
        assert "access-control-allow-credentials" not in answer.headers
    sandboxed = await preflight(dev.client, path, "null")  # a sandboxed frame's, a file's: never a client's
    assert sandboxed.status_code == 204
    assert_no_cors(sandboxed)
    plain = await dev.client.options(path)  # not a CORS preflight: the methods, and nothing of CORS
    assert plain.status_code == 204 and "OPTIONS" in plain.headers["allow"]
    assert_no_cors(plain)


# ---------------------------------------------------------------- client-based: the token endpoint


async def test_a_public_client_redeems_its_code_from_its_own_origin(spa: Flow, server: ServerProcess) -> None:
    code, verifier = await code_for(spa, server.base_url)
    response = await spa.client.post("/oauth2/token", data=token_form(spa, code, verifier), headers={"Origin": SPA})
    assert response.status_code == 200, response.text
    assert_allowed(response, SPA)
    body = response.json()
    assert body["access_token"] and body["token_type"] == "Bearer"
    # UserInfo, from the same page
    info = await spa.client.get(
        "/oauth2/userinfo", headers={"Origin": SPA, "Authorization": f"Bearer {body['access_token']}"}
    )
    assert info.status_code == 200, info.text
    assert_allowed(info, SPA)
    # the refresh and the revocation, from the same page
    refreshed = await spa.client.post(
        "/oauth2/token", headers={"Origin": SPA},
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": spa.app_id},
    )
    assert refreshed.status_code == 200, refreshed.text
    assert_allowed(refreshed, SPA)
    revoked = await spa.client.post(
        "/oauth2/revoke", headers={"Origin": SPA},
        data={"token": refreshed.json()["refresh_token"], "client_id": spa.app_id},
    )
    assert revoked.status_code == 200, revoked.text
    assert_allowed(revoked, SPA)


async def test_an_allowed_origin_reads_its_clients_errors(spa: Flow) -> None:
    response = await spa.client.post(
        "/oauth2/token", headers={"Origin": SPA},
        data={"grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": spa.redirect_uri,
              "code_verifier": "v" * 43, "client_id": spa.app_id},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
    assert_allowed(response, SPA)


async def test_another_origin_is_refused_before_the_code_is_spent(spa: Flow, server: ServerProcess) -> None:
    code, verifier = await code_for(spa, server.base_url)
    holder = Holder()
    for origin in (ELSEWHERE, "null", "https://spa.example:8443", "http://spa.example", SPA + ".evil.example"):
        proof = holder.proof("POST", f"{server.base_url}/oauth2/token")
        response = await spa.client.post(
            "/oauth2/token", data=token_form(spa, code, verifier), headers={"Origin": origin, "DPoP": proof}
        )
        assert response.status_code == 400, (origin, response.text)
        assert response.json()["error"] == "invalid_request"
        assert origin in response.json()["error_description"]
        assert_no_cors(response)
    # the code is still good for its own page, with a proof of the same key
    proof = holder.proof("POST", f"{server.base_url}/oauth2/token")
    response = await spa.client.post(
        "/oauth2/token", data=token_form(spa, code, verifier), headers={"Origin": SPA, "DPoP": proof}
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    assert_allowed(response, SPA)


async def test_a_confidential_client_is_never_answered_across_origins(backend: Flow, server: ServerProcess) -> None:
    code, verifier = await code_for(backend, server.base_url)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": backend.redirect_uri, "code_verifier": verifier}
    basic = (backend.app_id, backend.key_secret)
    for how in ({"auth": basic}, {"data_extra": {"client_id": backend.app_id, "client_secret": backend.key_secret}}):
        data = {**form, **how.get("data_extra", {})}
        response = await backend.client.post("/oauth2/token", data=data, auth=how.get("auth"), headers={"Origin": SPA})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request" and "confidential" in response.json()["error_description"]
        assert_no_cors(response)
    credentials = await backend.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=basic, headers={"Origin": SPA}
    )
    assert credentials.status_code == 400 and credentials.json()["error"] == "invalid_request"
    assert_no_cors(credentials)
    # the server that holds the secret (no Origin) redeems the code it was refused to the page
    response = await backend.client.post("/oauth2/token", data=form, auth=basic)
    assert response.status_code == 200, response.text
    assert_no_cors(response)
    # UserInfo judges the client the token was issued to, confidential or not: its own origin reads it
    token = response.json()["access_token"]
    info = await backend.client.get("/oauth2/userinfo", headers={"Origin": SPA, "Authorization": f"Bearer {token}"})
    assert info.status_code == 200, info.text
    assert_allowed(info, SPA)
    other = await backend.client.get("/oauth2/userinfo", headers={"Origin": ELSEWHERE, "Authorization": f"Bearer {token}"})
    assert other.status_code == 400 and other.json()["error"] == "invalid_request", other.text
    assert "Bearer" in other.headers["www-authenticate"]
    assert_no_cors(other)


async def test_userinfo_without_a_token_of_grantds_answers_no_cors(dev: Flow) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = await dev.client.get("/oauth2/userinfo", headers={"Origin": SPA, **headers})
        assert response.status_code == 401, response.text
        assert_no_cors(response)


async def test_a_request_without_origin_is_not_judged(spa: Flow, server: ServerProcess) -> None:
    code, verifier = await code_for(spa, server.base_url)
    response = await spa.client.post("/oauth2/token", data=token_form(spa, code, verifier))
    assert response.status_code == 200, response.text
    assert_no_cors(response)


async def test_device_authorization_and_par_follow_the_rule(spa: Flow, backend: Flow, dev: Flow) -> None:
    device = await spa.client.post(
        "/oauth2/device_authorization", data={"client_id": spa.app_id, "scope": "read_profile"}, headers={"Origin": SPA}
    )
    assert device.status_code == 200, device.text
    assert_allowed(device, SPA)
    refused = await spa.client.post(
        "/oauth2/device_authorization", data={"client_id": spa.app_id}, headers={"Origin": ELSEWHERE}
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert_no_cors(refused)
    pushed_form = {
        "response_type": "code", "client_id": spa.app_id, "redirect_uri": spa.redirect_uri, "scope": "read_profile",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
    }
    pushed = await spa.client.post("/oauth2/par", data=pushed_form, headers={"Origin": SPA})
    assert pushed.status_code == 201, pushed.text
    assert_allowed(pushed, SPA)
    confidential = await backend.client.post(
        "/oauth2/par", data={**pushed_form, "client_id": backend.app_id}, auth=(backend.app_id, backend.key_secret),
        headers={"Origin": SPA},
    )
    assert confidential.status_code == 400 and confidential.json()["error"] == "invalid_request"
    assert_no_cors(confidential)
    unknown = await dev.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "client_id": "no-such-client"}, headers={"Origin": SPA}
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    assert_no_cors(unknown)


# ---------------------------------------------------------------- never on cookie-authenticated routes


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/oauth2/authorize"), ("POST", "/oauth2/authorize"), ("GET", "/signin"), ("POST", "/signin"),
        ("GET", "/account"), ("GET", "/console"), ("GET", "/admin"), ("GET", "/v1/apps"), ("POST", "/v1/auth/login"),
        ("GET", "/v1/admin/users"), ("POST", "/oauth2/introspect"), ("POST", "/oauth/token"), ("GET", "/"),
    ],
)
async def test_cookie_authenticated_and_server_routes_answer_no_cors(dev: Flow, method: str, path: str) -> None:
    answer = await preflight(dev.client, path, SPA, method, "content-type")
    assert answer.status_code == 405, answer.text
    assert_no_cors(answer)
    response = await dev.client.request(method, path, headers={"Origin": SPA})
    assert response.status_code < 500, response.text
    assert_no_cors(response)


# ---------------------------------------------------------------- the rule's origins


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("https://spa.example/callback", "https://spa.example"),
        ("https://SPA.Example:443/cb?x=1", "https://spa.example"),
        ("HTTPS://spa.example:8443/cb", "https://spa.example:8443"),
        ("http://localhost:6274/oauth/callback", "http://localhost:6274"),
        ("http://127.0.0.1/cb", "http://127.0.0.1"),
        ("http://[::1]:8080/cb", "http://[::1]:8080"),
        ("https://bücher.example/cb", "https://xn--bcher-kva.example"),
        ("com.example.app:/callback", None),
        ("https:///nohost", None),
        ("https://spa.example:99999/cb", None),
    ],
)
def test_the_origin_of_a_redirect_uri(uri: str, origin: str | None) -> None:
    assert cors.origin_of(uri) == origin


def test_the_rule() -> None:
    uris = ["https://spa.example/cb", "com.example.app:/cb", "http://localhost:6274/cb"]
    assert cors.allowed_origins(uris) == {"https://spa.example", "http://localhost:6274"}
    assert cors.allows("https://spa.example", "public", uris)
    assert cors.allows("http://localhost:6274", "public", uris)
    assert not cors.allows("http://localhost:6275", "public", uris)  # a port is part of the origin
    assert not cors.allows("https://spa.example", "confidential", uris)
    assert cors.allows("https://spa.example", "confidential", uris, userinfo=True)
    assert not cors.allows("null", "public", uris) and not cors.allows("*", "public", uris)


# ---------------------------------------------------------------- the hot path and FastAPI alike


async def test_the_hot_path_and_fastapi_answer_a_browser_alike(app: Any, client: httpx.AsyncClient) -> None:
    """/oauth2/token and the JWKS are answered ahead of FastAPI (grantd.api.hot); FastAPI's handlers
    of the same routes answer a browser's request with the same status, body and headers."""
    public = await new_flow(client, client_type="public")
    confidential = await new_flow(client)
    origin = "https://app.example.com"  # new_flow's redirect URI's
    code = {"grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": public.redirect_uri,
            "code_verifier": "v" * 43, "client_id": public.app_id}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/oauth2/token", {"data": code, "headers": {"Origin": origin}}),
        ("POST", "/oauth2/token", {"data": code, "headers": {"Origin": ELSEWHERE}}),
        ("POST", "/oauth2/token", {"data": code}),
        ("POST", "/oauth2/token", {"data": {"grant_type": "client_credentials"}, "headers": {"Origin": origin},
                                   "auth": (confidential.app_id, confidential.key_secret)}),
        ("POST", "/oauth2/token", {"content": b"\xff", "headers": {"Origin": origin, "Content-Type": FORM}}),
        ("GET", "/.well-known/jwks.json", {"headers": {"Origin": ELSEWHERE}}),
    ]
    transport = httpx.ASGITransport(app=app.hot_routes.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as fastapi_alone:
        answers = [
            (what, [await c.request(method, path, **options) for c in (client, fastapi_alone)])
            for what, (method, path, options) in enumerate(requests)
        ]
    for what, (hot, fastapi) in answers:
        assert (hot.status_code, hot.content) == (fastapi.status_code, fastapi.content), (what, hot.text, fastapi.text)
        assert without_request_id(hot.headers) == without_request_id(fastapi.headers), what
    statuses = [(hot.status_code, hot.headers.get("access-control-allow-origin")) for _, (hot, _) in answers]
    assert statuses == [(400, origin), (400, None), (400, None), (400, None), (400, None), (200, "*")]
    assert [hot.json()["error"] for _, (hot, _) in answers[:5]] == [
        "invalid_grant", "invalid_request", "invalid_grant", "invalid_request", "invalid_request"
    ]


async def test_registration_off_answers_no_cors(client: httpx.AsyncClient) -> None:
    """The in-process app offers no dynamic registration (the default): its path is not opened."""
    answer = await preflight(client, "/oauth2/register", ELSEWHERE, "POST", "content-type")
    assert answer.status_code == 405
    assert_no_cors(answer)
    response = await client.post("/oauth2/register", json={"redirect_uris": [f"{ELSEWHERE}/cb"]}, headers={"Origin": ELSEWHERE})
    assert response.status_code == 404, response.text
    assert_no_cors(response)


def without_request_id(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((name, value) for name, value in headers.multi_items() if name not in ("x-request-id", "content-length"))


async def test_a_page_of_the_issuers_own_origin_is_not_judged(backend: Flow, server: ServerProcess) -> None:
    """Swagger UI on /docs sends Origin with its POSTs: the same origin, not a cross-origin request."""
    response = await backend.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(backend.app_id, backend.key_secret),
        headers={"Origin": server.base_url},
    )
    assert response.status_code == 200, response.text
    assert_no_cors(response)


def test_the_route_table_marks_exactly_these_paths(settings: Any) -> None:
    """What the table marks, and the preflights it declares for them: one OPTIONS per marked path,
    none elsewhere (a cookie-authenticated route marked by mistake fails here)."""
    from grantd import routes

    for registration, served in (("open", routes.served(settings.model_copy(update={"dynamic_registration": "open"}))),
                                 ("off", routes.served(settings.model_copy(update={"dynamic_registration": "off"})))):
        marked = {(route.path, route.cors) for route in served if route.cors is not None}
        expected = {(path, cors.OPEN) for path in OPEN_PATHS} | {(path, cors.CLIENT) for path in CLIENT_PATHS}
        if registration == "open":
            expected |= {("/oauth2/register", cors.OPEN), ("/oauth2/register/{client_id}", cors.OPEN)}
        assert marked == expected, registration
        assert {route.path for route in served if route.method == "OPTIONS"} == {path for path, _ in expected}
        assert all(route.hidden for route in served if route.method == "OPTIONS")
