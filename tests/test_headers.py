"""Security headers on every response (JSON, pages, errors, even a crash's 500), and the timeout
on slow request bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from grantd.config import Settings
from grantd.server import create_app

API_CSP = "default-src 'none'; frame-ancestors 'none'"


def assert_common(response: httpx.Response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def assert_api(response: httpx.Response) -> None:
    assert_common(response)
    assert response.headers["Content-Security-Policy"] == API_CSP
    assert response.headers["Cache-Control"] == "no-store"


async def test_json_success_and_token_responses(client: httpx.AsyncClient) -> None:
    assert_api(await client.get("/v1/oauth/permissions"))
    signup = await client.post("/v1/auth/signup", json={"email": "hdr-" + str(id(client)) + "@example.com", "password": "correct horse battery"})
    assert signup.status_code == 200
    assert_api(signup)
    assert signup.headers["Pragma"] == "no-cache"


async def test_json_error_responses(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/no/such/route"),
        await client.post("/v1/auth/login", content=b"not json", headers={"Content-Type": "application/json"}),
        await client.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong password 1"}),
        await client.post("/v1/auth/login", content=b"x" * 200_000, headers={"Content-Type": "application/json"}),
        await client.post("/oauth2/token", data={"grant_type": "client_credentials"}),
    ):
        assert response.status_code >= 400
        assert_api(response)


async def test_the_full_neucron_flow_never_caches_a_token(flow: Any) -> None:
    authorize = await flow.authorize()
    assert_api(authorize)
    token = await flow.redeem(authorize.json()["data"]["code"])
    assert token.status_code == 200
    assert_api(token)


async def test_public_documents_keep_their_own_caching(client: httpx.AsyncClient) -> None:
    jwks = await client.get("/.well-known/jwks.json")
    assert_common(jwks)
    assert "no-store" not in jwks.headers["Cache-Control"]
    css = await client.get("/static/grantd.css")
    assert_common(css)
    assert css.headers["Cache-Control"].startswith("public")


async def test_pages_keep_their_own_csp(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/signin"), await client.get("/oauth2/authorize?client_id=nope")):
        assert "text/html" in response.headers["content-type"]
        assert_common(response)
        csp = response.headers["Content-Security-Policy"]
        assert "form-action" in csp and "default-src 'none'" in csp  # the page's own, not replaced
        assert len(response.headers.get_list("Content-Security-Policy")) == 1
        assert response.headers["Cache-Control"] == "no-store"


async def test_swagger_ui_is_not_broken(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert docs.headers["Content-Security-Policy"] == "frame-ancestors 'none'"  # scripts from the CDN still load
    assert docs.headers["X-Content-Type-Options"] == "nosniff"
    openapi = await client.get("/openapi.json")
    assert openapi.status_code == 200
    assert openapi.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


@pytest.fixture
async def crashing(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    values = settings.model_dump(include={"database_url", "secret_key", "data_dir", "issuer"})
    application = create_app(Settings(**values, request_body_timeout=0.3))

    async def boom() -> None:
        raise RuntimeError("a bug")

    application.add_api_route("/boom", boom, methods=["GET"], include_in_schema=False)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_a_crash_500_carries_the_headers(crashing: httpx.AsyncClient) -> None:
    response = await crashing.get("/boom")
    assert response.status_code == 500
    assert_api(response)


async def test_a_slow_request_body_gets_408(crashing: httpx.AsyncClient) -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"email": "slow@example.com", '
        await asyncio.sleep(2)
        yield b'"password": "correct horse battery"}'

    response = await asyncio.wait_for(
        crashing.post("/v1/auth/login", content=slow_body(), headers={"Content-Type": "application/json"}), 10
    )
    assert response.status_code == 408
    assert response.json()["error"] == "invalid_request"
    assert_api(response)


@pytest.mark.parametrize(
    ("path", "content_type", "start", "error_key"),
    [
        ("/oauth/token", "application/json", b'{"token": {"auth_code": ', "message"),
        ("/v1/oauth/token", "application/json", b'{"token": {"auth_code": ', "message"),
        ("/oauth/authorize", "application/json", b'{"token": {"app_id": ', "message"),
        ("/v1/oauth/authorize", "application/json", b'{"token": {"app_id": ', "message"),
        ("/oauth2/token", "application/x-www-form-urlencoded", b"grant_type=client_", "error_description"),
        ("/oauth2/introspect", "application/x-www-form-urlencoded", b"token=", "error_description"),
    ],
)
async def test_a_slow_body_on_a_hot_route_gets_408_in_its_dialect(
    crashing: httpx.AsyncClient, path: str, content_type: str, start: bytes, error_key: str
) -> None:
    """The hot routes read their own bodies (grantd.api.hot): the same limit holds there."""

    async def slow_body() -> AsyncIterator[bytes]:
        yield start
        await asyncio.sleep(2)
        yield b"never read"

    response = await asyncio.wait_for(crashing.post(path, content=slow_body(), headers={"Content-Type": content_type}), 10)
    assert response.status_code == 408
    assert response.json()["error"] == "invalid_request" and error_key in response.json()
    assert response.headers["X-Request-ID"]
    assert_api(response)
