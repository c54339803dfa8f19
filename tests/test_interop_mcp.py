"""Interop: the official MCP Python SDK's OAuth client (``mcp.client.auth.OAuthClientProvider``)
against a real `grantd serve` and examples/mcp_server, a person signing in and consenting on
grantd's pages in headless Chromium.

The SDK does the whole client's part by itself, as an MCP client would: its first call is answered
401; it follows the challenge's ``resource_metadata`` (RFC 9728) to grantd, reads grantd's
metadata (RFC 8414), registers itself, sends the person to the authorization endpoint with PKCE
(S256) and ``resource`` (RFC 8707), redeems the code and calls the tool; once its access token
has expired (as it reckons), it refreshes it, for the same resource, without the pages. Each test checks what a
person or an operator would: the requests the client made, the app that now exists, the consent
page, the token's audience and the tool's answer.

- dynamic client registration (``GRANTD_DYNAMIC_REGISTRATION=open``, RFC 7591);
- a client ID metadata document served by the test over https (a certificate of its own, which
  grantd trusts through ``SSL_CERT_FILE``), its URL the SDK's ``client_metadata_url``: no
  registration at all;
- a token grantd issued for another resource is refused by the MCP server (401 invalid_token),
  where the same app's token for the MCP endpoint is accepted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import httpx2
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from grantd.store.apps import SELF_REGISTERED
from support.challenges import parse_challenges
from support.neucron import PASSWORD, new_flow, sign_up
from support.servers import ServerProcess, free_port, server_on_new_sqlite, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("GRANTD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions", "--no-first-run"]
TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium"),
]


# ---------------------------------------------------------------- a certificate for the document server


@dataclass
class Certificate:
    cert_file: Path
    key_file: Path


def self_signed(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1, usable as its own certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate = Certificate(directory / "cert.pem", directory / "key.pem")
    certificate.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificate.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificate


@dataclass
class DocumentServer:
    """Client ID metadata documents over https on 127.0.0.1, and the requests for them."""

    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    base: str = ""

    async def answer(self, request: Request) -> JSONResponse:
        self.fetched.append(request.url.path)
        document = self.documents.get(request.url.path)
        if document is None:
            return JSONResponse({}, status_code=404)
        return JSONResponse(document, headers={"Cache-Control": "max-age=60"})


@contextmanager
def https_documents(certificate: Certificate) -> Iterator[DocumentServer]:
    documents = DocumentServer()
    port = free_port()
    app = Starlette(routes=[Route("/{path:path}", documents.answer)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
        ssl_certfile=str(certificate.cert_file), ssl_keyfile=str(certificate.key_file),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    documents.base = f"https://127.0.0.1:{port}"
    try:
        yield documents
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------- grantd, the MCP server, the documents


@dataclass
class Deployment:
    grantd: ServerProcess
    endpoint: str  # the MCP endpoint: the resource
    metadata_url: str  # its RFC 9728 metadata
    documents: DocumentServer
    database: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[Deployment]:
    certificate = self_signed(tmp_path_factory.mktemp("mcp-tls"))
    env = {
        "GRANTD_DYNAMIC_REGISTRATION": "open",
        # The documents are served on 127.0.0.1, as in development; over https, with the test's certificate.
        "GRANTD_CLIENT_ID_METADATA_DOCUMENT_ALLOW_PRIVATE_ADDRESSES": "true",
        "SSL_CERT_FILE": str(certificate.cert_file),
    }
    with https_documents(certificate) as documents, server_on_new_sqlite(tmp_path_factory, secret_key, "mcp-interop", env=env) as grantd:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}/mcp"
        log_path = grantd.log_path.parent / "mcp_server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", "examples/mcp_server", "main:app", "--port", str(port)],
                cwd=ROOT,
                env={**os.environ, "GRANTD_ISSUER": grantd.base_url, "MCP_RESOURCE": endpoint},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        metadata_url = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
        try:
            wait_until_answers(metadata_url, server, log_path, seconds=30, what="the MCP server")
            yield Deployment(grantd, endpoint, metadata_url, documents, grantd.log_path.parent / "grantd.db")
        finally:
            server.terminate()
            server.wait(10)
        assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")
    assert "Traceback" not in grantd.log(), grantd.log()[-4000:]


# ---------------------------------------------------------------- the MCP client and the person in Chromium


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Person:
    """A person with an account, who signs in and allows on grantd's pages in Chromium when the
    MCP client sends them there (the SDK's redirect handler); the redirect to the client's loopback
    redirect URI is caught by the browser, and its parameters handed back (the callback handler)."""

    email: str
    redirect_uri: str
    browser: Any
    authorization_urls: list[str] = field(default_factory=list)
    consent: dict[str, Any] = field(default_factory=dict)
    callback: str = ""

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        context = await self.browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = await context.new_page()

            async def client_site(route: Any) -> None:
                self.callback = route.request.url
                await route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>MCP client</title>Done.")

            await page.route(f"{self.redirect_uri}**", client_site)
            await page.goto(authorization_url)
            assert urlsplit(page.url).path == "/signin", page.url
            await page.get_by_label("Email").fill(self.email)
            await page.get_by_label("Password", exact=True).fill(PASSWORD)
            async with page.expect_navigation():
                await page.get_by_role("button", name="Sign in").click()
            self.consent = {
                "heading": await page.get_by_role("heading", level=1).inner_text(),
                "resources": await page.locator("code.resource").all_inner_texts(),
                "unreviewed": await page.locator(".unreviewed").count(),
            }
            await page.get_by_role("button", name="Allow").click()
            await page.wait_for_url(f"{self.redirect_uri}?**")
        finally:
            await context.close()

    async def callback_handler(self) -> AuthorizationCodeResult:
        params = dict(parse_qsl(urlsplit(self.callback).query))
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


@pytest.fixture
async def browser() -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@dataclass
class Outcome:
    whoami: dict[str, Any]
    first_token: str  # the access token of the authorization; storage.tokens holds the refreshed one
    requests: list[str]  # "METHOD URL" of every request the MCP client made
    storage: MemoryStorage
    person: Person
    user_id: str


async def connect_and_call(
    deployment: Deployment,
    browser: Any,
    client_metadata_url: str | None = None,
    token_endpoint_auth_method: str | None = None,
) -> Outcome:
    """A new person and a new MCP client (redirecting to a loopback URI on a port of its own), which
    finds its own way to a token and calls ``whoami``."""
    async with httpx.AsyncClient(base_url=deployment.grantd.base_url, timeout=30) as api:
        email = f"mcp-{os.urandom(6).hex()}@example.com"
        user_id, _ = await sign_up(api, email)
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    person = Person(email, redirect_uri, browser)
    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=deployment.endpoint,
        client_metadata=OAuthClientMetadata(
            # The SDK's defaults otherwise (grant types, response types, application_type native).
            client_name="MCP interop client",
            redirect_uris=[redirect_uri],
            token_endpoint_auth_method=token_endpoint_auth_method,
        ),
        storage=storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
        client_metadata_url=client_metadata_url,
    )
    requests: list[str] = []

    async def record(request: httpx2.Request) -> None:
        requests.append(f"{request.method} {request.url}")

    async def whoami(http: httpx2.AsyncClient) -> dict[str, Any]:
        async with Client(streamable_http_client(deployment.endpoint, http_client=http)) as client:
            tools = await client.list_tools()
            assert [tool.name for tool in tools.tools] == ["whoami"]
            result = await client.call_tool("whoami", {})
            assert not result.is_error, result
            return dict(result.structured_content or {})

    async with httpx2.AsyncClient(auth=auth, timeout=60, event_hooks={"request": [record]}) as http:
        first = await whoami(http)
        assert storage.tokens is not None and storage.tokens.refresh_token, storage.tokens
        first_token = storage.tokens.access_token
        # The access token expires (as the client reckons it): the next session refreshes it first.
        auth.context.token_expiry_time = time.time() - 1
        again = await whoami(http)
    assert again == first
    return Outcome(first, first_token, requests, storage, person, user_id)


def app_row(deployment: Deployment, app_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(deployment.database) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT id, owner_id, registration, client_type FROM apps WHERE id = ?", (app_id,)).fetchone()
    return dict(row) if row else None


def check_the_way_there(deployment: Deployment, outcome: Outcome) -> dict[str, str]:
    """What every run shows: discovery from the resource's metadata, one authorization request with
    PKCE S256 and the MCP endpoint as ``resource``, the consent page naming it, a token for it,
    and a refreshed token for it (no second visit to the pages); returns the authorization request's parameters."""
    base = deployment.grantd.base_url
    assert f"GET {deployment.metadata_url}" in outcome.requests, outcome.requests
    assert f"GET {base}/.well-known/oauth-authorization-server" in outcome.requests, outcome.requests
    assert outcome.requests.index(f"GET {deployment.metadata_url}") < outcome.requests.index(
        f"GET {base}/.well-known/oauth-authorization-server"
    )
    (authorization_url,) = outcome.person.authorization_urls
    assert authorization_url.startswith(f"{base}/oauth2/authorize?")
    query = dict(parse_qsl(urlsplit(authorization_url).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["resource"] == deployment.endpoint
    assert "read_profile" in query["scope"].split()
    assert outcome.person.consent["resources"] == [deployment.endpoint]
    # Two token requests: the code's, then the refresh (the SDK asks for the resource again).
    assert outcome.requests.count(f"POST {base}/oauth2/token") == 2, outcome.requests

    tokens = outcome.storage.tokens
    assert tokens is not None and tokens.access_token != outcome.first_token
    for token in (outcome.first_token, tokens.access_token):
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == deployment.endpoint and claims["iss"] == base
    assert outcome.whoami["user_id"] == outcome.user_id
    assert "read_profile" in outcome.whoami["permissions"]
    return query


@pytest.mark.parametrize("method", [None, "none"], ids=["confidential", "public"])
async def test_the_mcp_sdk_registers_itself_and_calls_the_tool(deployment: Deployment, browser: Any, method: str | None) -> None:
    """Registered as the SDK asks: by default a confidential client (client_secret_basic, RFC 7591's
    default), or a public one (``none``), which proves the code with PKCE alone."""
    outcome = await connect_and_call(deployment, browser, token_endpoint_auth_method=method)
    base = deployment.grantd.base_url
    query = check_the_way_there(deployment, outcome)

    # Registered by itself at grantd's registration endpoint: an app now exists, self-registered.
    assert f"POST {base}/oauth2/register" in outcome.requests
    client_info = outcome.storage.client_info
    assert client_info is not None and client_info.client_id == query["client_id"]
    assert client_info.token_endpoint_auth_method == (method or "client_secret_basic")
    assert (client_info.client_secret is None) == (method == "none")
    row = app_row(deployment, client_info.client_id)
    assert row is not None and row["owner_id"] == SELF_REGISTERED, row
    assert row["client_type"] == ("public" if method == "none" else "confidential"), row
    assert outcome.person.consent["heading"] == "MCP interop client wants to access your account"
    assert outcome.person.consent["unreviewed"] == 1  # no developer vouches for it
    assert outcome.whoami["app_id"] == client_info.client_id


async def test_the_mcp_sdk_with_a_client_id_metadata_document(deployment: Deployment, browser: Any) -> None:
    documents = deployment.documents
    client_id = f"{documents.base}/clients/mcp-interop.json"
    # A published document cannot know the port a native client will listen on: it lists the
    # loopback URI without one, and any port matches it (RFC 8252 §7.3).
    documents.documents["/clients/mcp-interop.json"] = {
        "client_id": client_id,
        "client_name": "MCP CIMD client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    server_metadata = httpx.get(f"{deployment.grantd.base_url}/.well-known/oauth-authorization-server", timeout=10).json()
    assert server_metadata["client_id_metadata_document_supported"] is True

    outcome = await connect_and_call(deployment, browser, client_id)  # redirecting to a port of its own
    query = check_the_way_there(deployment, outcome)

    # No registration: the URL is the client_id, and grantd fetched the document (over https) to know the client.
    assert not any("/oauth2/register" in request for request in outcome.requests), outcome.requests
    assert query["client_id"] == client_id
    assert query["redirect_uri"].startswith("http://127.0.0.1:") and urlsplit(query["redirect_uri"]).port
    assert "/clients/mcp-interop.json" in documents.fetched
    assert outcome.person.consent["heading"] == "MCP CIMD client wants to access your account"
    assert outcome.person.consent["unreviewed"] == 1
    row = app_row(deployment, client_id)
    assert row is not None and row["owner_id"] == SELF_REGISTERED and row["registration"] == "metadata_document", row
    assert row["client_type"] == "public"  # the document's token_endpoint_auth_method none
    assert outcome.whoami["app_id"] == client_id


async def test_a_token_for_another_resource_is_refused_by_the_mcp_server(deployment: Deployment) -> None:
    base = deployment.grantd.base_url
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        flow = await new_flow(api)

        async def token_for(resource: str) -> str:
            response = await api.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials", "scope": "read_profile", "resource": resource},
                auth=(flow.app_id, flow.key_secret),
            )
            assert response.status_code == 200, response.text
            return response.json()["access_token"]

        other = await token_for("https://other.example/mcp")
        mine = await token_for(deployment.endpoint)
    assert jwt.decode(other, options={"verify_signature": False})["aud"] == "https://other.example/mcp"

    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    refused = httpx.post(deployment.endpoint, json=initialize, headers={**headers, "Authorization": f"Bearer {other}"}, timeout=10)
    assert refused.status_code == 401
    challenge = parse_challenges(refused.headers["www-authenticate"])["Bearer"]
    assert challenge["error"] == "invalid_token" and challenge["resource_metadata"] == deployment.metadata_url

    accepted = httpx.post(deployment.endpoint, json=initialize, headers={**headers, "Authorization": f"Bearer {mine}"}, timeout=10)
    assert accepted.status_code == 200, accepted.text
