"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a client_id that is
a URL names the client's metadata, which grantd fetches from a real HTTP server here. One test per
rule of the draft's security considerations: no fetch of a private address, by address or by a
host name resolving to one (unless the operator allows it for development), no redirect followed,
exact redirect URIs, a document that names another client, an oversize document; and HTTP caching,
the consent page, and a code flow to a token."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from acting_user import ActingUser, new_person
from grantd.config import Settings
from grantd.core import apps as core_apps
from grantd.server import create_app
from grantd.store.db import Database
from grantd.store.schema import apps as apps_table
from support.neucron import PASSWORD
from support.resolver import install

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
REDIRECT = "https://mcp-client.example/callback"


class DocumentServer:
    """A real HTTP server on 127.0.0.1 (or ``host``) publishing documents: path -> (body, headers,
    status); it counts requests."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.documents: dict[str, tuple[bytes, dict[str, str], int]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server.requests.append(self.path)
                body, headers, status = server.documents.get(self.path, (b"not found", {}, 404))
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(
        self, path: str, document: Any = None, *, headers: dict[str, str] | None = None, raw: bytes | None = None,
        status: int = 200,
    ) -> str:
        """Serve ``document`` (by default, a public client's, naming this URL) at ``path``, with
        ``status``; its URL."""
        url = self.base + path
        if document is None:
            document = {"client_id": url, "client_name": "MCP Inspector", "redirect_uris": [REDIRECT]}
        self.documents[path] = (raw if raw is not None else json.dumps(document).encode(), headers or {}, status)
        return url

    def hits(self, path: str) -> int:
        return self.requests.count(path)


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(**settings)``: (an httpx client, the app) with those settings, on the session's
    database; by default private addresses are allowed, as in development (the server is on 127.0.0.1)."""
    opened: list[Any] = []

    async def make(**changes: Any) -> tuple[httpx.AsyncClient, Any]:
        changes.setdefault("client_id_metadata_document_allow_private_addresses", True)
        application = create_app(settings.model_copy(update=changes))
        lifespan = application.router.lifespan_context(application)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER)
        opened.append((lifespan, client))
        return client, application

    yield make
    for lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(hashlib.sha256(b"cimd-test").digest()).rstrip(b"=").decode()
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_url(client_id: str, redirect_uri: str = REDIRECT, **more: str) -> str:
    _, challenge = _pkce()
    query = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "read_profile",
        "state": "st", "code_challenge": challenge, "code_challenge_method": "S256", **more,
    }
    return f"/oauth2/authorize?{urlencode(query)}"


async def public_token(client: httpx.AsyncClient, client_id: str, code: str) -> httpx.Response:
    verifier, _ = _pkce()
    return await client.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id,
              "code_verifier": verifier},
    )


def error_page(response: httpx.Response, words: str) -> None:
    """An error page, never a redirect to the client."""
    assert response.status_code in (400, 401), response.text
    assert "location" not in response.headers
    assert words in response.text, response.text


async def stored(settings: Settings, client_id: str) -> Any:
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            return (await conn.execute(select(apps_table).where(apps_table.c.id == client_id))).first()
    finally:
        await db.dispose()


async def expire(settings: Settings, client_id: str) -> None:
    db = Database(settings.resolved_database_url)
    try:
        async with db.write() as tx:
            await tx.execute(update(apps_table).where(apps_table.c.id == client_id).values(metadata_document_expires_at=0))
    finally:
        await db.dispose()


async def test_discovery_says_documents_are_supported(serve: Callable[..., Any]) -> None:
    client, _ = await serve()
    assert (await client.get("/.well-known/oauth-authorization-server")).json()["client_id_metadata_document_supported"] is True
    client, _ = await serve(client_id_metadata_documents=False)
    assert (await client.get("/.well-known/openid-configuration")).json()["client_id_metadata_document_supported"] is False


async def test_a_document_client_signs_a_user_in_and_gets_tokens(
    serve: Callable[..., Any], documents: DocumentServer
) -> None:
    client_id = documents.publish("/flow/client.json", headers={"Cache-Control": "max-age=600"})
    client, application = await serve()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER) as browser:
        user_id, email = await new_person(client)
        person = ActingUser(browser, email, PASSWORD, user_id=user_id)
        back = await person.authorize(authorize_url(client_id), REDIRECT)
    consent = next(page for page in person.pages if 'action="/oauth2/authorize"' in page.text)
    assert '<strong class="host">127.0.0.1</strong>' in consent.text  # the host, prominently
    assert "no one has reviewed it" in consent.text and "MCP Inspector" in consent.text
    response = await public_token(client, client_id, parse_qs(urlsplit(back).query)["code"][0])
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client_id
    assert documents.hits("/flow/client.json") == 1  # fresh for max-age: fetched once for the whole flow


async def test_no_private_address_without_the_development_allowance(
    serve: Callable[..., Any], documents: DocumentServer
) -> None:
    """SSRF: a client_id on a loopback (or private) address is refused before any request is made."""
    client_id = documents.publish("/ssrf/client.json")
    client, _ = await serve(client_id_metadata_document_allow_private_addresses=False)
    error_page(await client.get(authorize_url(client_id)), "https")  # http: refused as not https
    https_id = client_id.replace("http://", "https://")
    error_page(await client.get(authorize_url(https_id)), "not public")
    assert documents.hits("/ssrf/client.json") == 0
    # The token endpoint refuses it the same way.
    response = await client.post("/oauth2/token", data={"grant_type": "authorization_code", "code": "x", "client_id": https_id})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert documents.hits("/ssrf/client.json") == 0
    # With the allowance (development), the same document is fetched.
    client, _ = await serve()
    assert (await client.get(authorize_url(client_id))).status_code in (200, 302, 303)
    assert documents.hits("/ssrf/client.json") == 1


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.5"], ["169.254.169.254"], ["::1"], ["fc00::5"], ["1.1.1.1", "::1"]],
    ids=["private", "link-local-metadata", "ipv6-loopback", "ipv6-unique-local", "public-and-loopback"],
)
async def test_a_host_that_resolves_to_a_private_address_is_refused_before_any_connection(
    serve: Callable[..., Any], settings: Settings, monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    """SSRF through DNS: a client_id whose host name (not an address) resolves to a private,
    link-local or loopback address, among its answers, is refused without any connection, as the
    document server on ::1 here sees; with the development allowance the same name is fetched."""
    on_loopback = DocumentServer("::1")
    try:
        resolved = install(monkeypatch, addresses)
        client_id = f"https://cimd.rebind.test:{on_loopback.port}/client.json"
        on_loopback.publish("/client.json", {"client_id": client_id, "redirect_uris": [REDIRECT]})
        client, _ = await serve(client_id_metadata_document_allow_private_addresses=False)
        started = time.monotonic()
        error_page(await client.get(authorize_url(client_id)), "resolves to an address that is not public")
        assert time.monotonic() - started < 1  # refused at the check, not after a connection attempt timed out
        assert resolved.calls == 1 and on_loopback.requests == []
        assert await stored(settings, client_id) is None
        # The control: with the allowance (development, and http), the name resolving to ::1 is fetched there.
        install(monkeypatch, ["::1"])
        allowed_id = f"http://cimd.rebind.test:{on_loopback.port}/allowed.json"
        on_loopback.publish("/allowed.json", {"client_id": allowed_id, "redirect_uris": [REDIRECT]})
        client, _ = await serve()
        assert (await client.get(authorize_url(allowed_id))).status_code in (200, 302, 303)
        assert on_loopback.requests == ["/allowed.json"]
    finally:
        on_loopback.httpd.shutdown()
        on_loopback.httpd.server_close()


async def test_a_redirect_is_not_followed(serve: Callable[..., Any], documents: DocumentServer, settings: Settings) -> None:
    """No redirects (§6): a document server answering 302 to a valid document elsewhere is refused,
    and the document it points to is never fetched."""
    elsewhere = documents.publish("/redirect-target/client.json")
    client_id = documents.publish("/redirecting/client.json", raw=b"", status=302, headers={"Location": elsewhere})
    client, _ = await serve()
    error_page(await client.get(authorize_url(client_id)), "answered 302")
    assert documents.hits("/redirecting/client.json") == 1 and documents.hits("/redirect-target/client.json") == 0
    assert await stored(settings, client_id) is None
    # The token endpoint refuses it the same way.
    response = await client.post("/oauth2/token", data={"grant_type": "authorization_code", "code": "x", "client_id": client_id})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
    assert documents.hits("/redirect-target/client.json") == 0


async def test_the_operators_host_lists(serve: Callable[..., Any], documents: DocumentServer) -> None:
    client_id = documents.publish("/hosts/client.json")
    client, _ = await serve(client_id_metadata_document_denied_hosts=["127.0.0.1"])
    error_page(await client.get(authorize_url(client_id)), "does not accept")
    client, _ = await serve(client_id_metadata_document_allowed_hosts=[".example.com"])
    error_page(await client.get(authorize_url(client_id)), "does not accept")
    assert documents.hits("/hosts/client.json") == 0


async def test_redirect_uris_are_matched_exactly(serve: Callable[..., Any], documents: DocumentServer) -> None:
    client_id = documents.publish("/redirect/client.json")
    client, _ = await serve()
    for forged in ("https://mcp-client.example/callback/x", "https://evil.example/callback", REDIRECT + "?x=1"):
        error_page(await client.get(authorize_url(client_id, forged)), "redirect_uri")


async def test_a_document_naming_another_client_id(
    serve: Callable[..., Any], documents: DocumentServer, settings: Settings
) -> None:
    client_id = documents.publish(
        "/other/client.json", {"client_id": "https://victim.example/client.json", "redirect_uris": [REDIRECT]}
    )
    client, _ = await serve()
    error_page(await client.get(authorize_url(client_id)), "its own URL")
    assert await stored(settings, client_id) is None  # no app was made of it
    assert await stored(settings, "https://victim.example/client.json") is None


async def test_an_oversize_document(serve: Callable[..., Any], documents: DocumentServer) -> None:
    url = documents.base + "/big/client.json"
    padding = "x" * 6000
    client_id = documents.publish(
        "/big/client.json", {"client_id": url, "redirect_uris": [REDIRECT], "client_name": "Big", "padding": padding}
    )
    client, _ = await serve()
    error_page(await client.get(authorize_url(client_id)), "larger than")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"token_endpoint_auth_method": "client_secret_basic"}, "none or private_key_jwt"),
        ({"client_secret": "s3cret"}, "client_secret"),
        ({"redirect_uris": ["http://mcp-client.example/callback"]}, "redirect_uris"),
        ({"redirect_uris": "https://mcp-client.example/callback"}, "redirect_uris"),
        ({"logo_uri": "javascript:alert(1)"}, "logo_uri"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "jwks"),
    ],
)
async def test_a_document_refused_by_the_rules_of_every_app(
    serve: Callable[..., Any], documents: DocumentServer, changes: dict[str, Any], words: str
) -> None:
    path = f"/rules/{abs(hash(json.dumps(changes, sort_keys=True)))}.json"
    url = documents.base + path
    documents.publish(path, {"client_id": url, "redirect_uris": [REDIRECT], **changes})
    client, _ = await serve()
    error_page(await client.get(authorize_url(url)), words)


async def test_not_json_and_not_found(serve: Callable[..., Any], documents: DocumentServer) -> None:
    client_id = documents.publish("/garbage/client.json", raw=b"<html>hello</html>")
    client, _ = await serve()
    error_page(await client.get(authorize_url(client_id)), "not JSON")
    deep = documents.publish("/deep/client.json", raw=b"[" * 2500 + b"]" * 2500)  # within the size cap
    error_page(await client.get(authorize_url(deep)), "not JSON")
    error_page(await client.get(authorize_url(documents.base + "/missing/client.json")), "answered 404")


async def test_http_caching_is_honoured_and_bounded(
    serve: Callable[..., Any], documents: DocumentServer, settings: Settings
) -> None:
    client, application = await serve()
    for path, headers, seconds in (
        ("/cache/max-age.json", {"Cache-Control": "public, max-age=900"}, 900),
        ("/cache/none.json", {}, 300),
        ("/cache/huge.json", {"Cache-Control": "max-age=99999999"}, 86400),
        ("/cache/no-store.json", {"Cache-Control": "no-store"}, 60),
    ):
        client_id = documents.publish(path, headers=headers)
        assert (await client.get(authorize_url(client_id))).status_code in (200, 302, 303)
        row = await stored(settings, client_id)
        now = application.state.ctx.now()
        assert now + seconds - 5 <= row.metadata_document_expires_at <= now + seconds, path
        # Within its freshness it is not fetched again.
        await client.get(authorize_url(client_id))
        assert documents.hits(path) == 1, path

    # Once stale, it is fetched again, and the app follows the document.
    client_id = documents.base + "/cache/max-age.json"
    documents.publish("/cache/max-age.json", {"client_id": client_id, "client_name": "Renamed", "redirect_uris": [REDIRECT]})
    await expire(settings, client_id)
    assert (await client.get(authorize_url(client_id))).status_code in (200, 302, 303)
    assert documents.hits("/cache/max-age.json") == 2
    assert (await stored(settings, client_id)).name == "Renamed"


async def test_disabled_like_any_app(serve: Callable[..., Any], documents: DocumentServer, settings: Settings) -> None:
    client_id = documents.publish("/disabled/client.json")
    client, application = await serve()
    assert (await client.get(authorize_url(client_id))).status_code in (200, 302, 303)
    await core_apps.disable(application.state.ctx, None, client_id)  # as an operator does
    error_page(await client.get(authorize_url(client_id)), "disabled")
    await expire(settings, client_id)  # fetched again: it stays disabled
    error_page(await client.get(authorize_url(client_id)), "disabled")
    assert (await stored(settings, client_id)).disabled_at is not None


async def test_off_the_url_is_no_client(serve: Callable[..., Any], documents: DocumentServer) -> None:
    client_id = documents.publish("/off/client.json")
    client, _ = await serve(client_id_metadata_documents=False)
    error_page(await client.get(authorize_url(client_id)), "Unknown client_id")
    assert documents.hits("/off/client.json") == 0


async def test_a_pushed_request_of_a_document_client(serve: Callable[..., Any], documents: DocumentServer) -> None:
    client_id = documents.publish("/par/client.json")
    client, _ = await serve()
    _, challenge = _pkce()
    form = {
        "client_id": client_id, "response_type": "code", "redirect_uri": REDIRECT, "scope": "read_profile",
        "state": "st", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    response = await client.post("/oauth2/par", data=form)
    assert response.status_code == 201, response.text
    refused = await client.post("/oauth2/par", data={**form, "redirect_uri": "https://evil.example/callback"})
    assert refused.status_code == 400 and "redirect_uri" in refused.json()["error_description"], refused.text


async def test_a_document_client_with_private_key_jwt(serve: Callable[..., Any], documents: DocumentServer) -> None:
    """No shared secret: a document's client may prove itself with keys it publishes (RFC 7523)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": "k1"}
    url = documents.base + "/pkjwt/client.json"
    documents.publish(
        "/pkjwt/client.json",
        {"client_id": url, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [public]}},
    )
    client, application = await serve()
    now = application.state.ctx.now()
    assertion = jwt.encode(
        {"iss": url, "sub": url, "aud": ISSUER, "iat": now, "exp": now + 60, "jti": f"j-{now}"},
        private, algorithm="ES256", headers={"kid": "k1"},
    )
    form = {
        "grant_type": "client_credentials", "scope": "read_profile",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion": assertion,
    }
    response = await client.post("/oauth2/token", data=form)
    assert response.status_code == 200, response.text
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["client_id"] == url
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        {"iss": url, "sub": url, "aud": ISSUER, "iat": now, "exp": now + 60, "jti": f"k-{now}"},
        other, algorithm="ES256", headers={"kid": "k1"},
    )
    response = await client.post("/oauth2/token", data={**form, "client_assertion": forged})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
