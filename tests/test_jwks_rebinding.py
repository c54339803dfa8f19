"""A ``jwks_uri`` is fetched over a connection to the address its host was checked at: the host is
resolved once (``core.jwks._resolve``), every address must
be public unless the operator allows private ones, and the socket then goes to that address while
the request keeps the host name (its ``Host`` header, the TLS server name and the certificate
check). A DNS answer that changes between the check and the connection (DNS rebinding) cannot make
the server reach a private address.

The process's resolver answers for test host names (``*.rebind.test``, tests/support/resolver.py) as each test says, and
differently on a second resolution, as a rebinding DNS server would; everything else is the real
path: real sockets to local HTTP and HTTPS servers."""

from __future__ import annotations

import datetime
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grantd.core import jwks as jwks_module
from grantd.core.errors import InvalidClient
from support.neucron import new_flow
from support.resolver import install

HOST = "keys.rebind.test"
PUBLIC = "1.1.1.1"  # a global address: passes the check (nothing of the test listens there)


class Served:
    """A local server publishing a JWK Set: what it saw (connections, Host headers, TLS names)."""

    def __init__(self, server: ThreadingHTTPServer, scheme: str) -> None:
        self.server, self.scheme = server, scheme
        self.connections = 0
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def uri(self, host: str = HOST) -> str:
        return f"{self.scheme}://{host}:{self.port}/jwks.json"




@contextmanager
def serving(scheme: str, body: bytes, tls: ssl.SSLContext | None = None) -> Iterator[Served]:
    holder: list[Served] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            holder[0].hosts.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def get_request(self) -> Any:
            sock, address = super().get_request()
            holder[0].connections += 1
            if tls is not None:
                sock = tls.wrap_socket(sock, server_side=True)
            return sock, address

    server = Server(("127.0.0.1", 0), Handler)
    served = Served(server, scheme)
    holder.append(served)
    if tls is not None:
        tls.sni_callback = lambda sock, name, context: served.server_names.append(name)  # type: ignore[assignment]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_set(private_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {"keys": [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key())), "kid": "k1"}]}


@pytest.fixture
def http_server(key_set: dict[str, Any]) -> Iterator[Served]:
    with serving("http", json.dumps(key_set).encode()) as served:
        yield served


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``HOST`` only (not for 127.0.0.1): its PEM files."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def https_server(key_set: dict[str, Any], certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """An HTTPS server for ``HOST``, whose certificate the fetch trusts (and no other)."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*certificate)
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    monkeypatch.setattr(jwks_module, "_ssl_context", lambda: trusted)
    with serving("https", json.dumps(key_set).encode(), tls) as served:
        yield served


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Any:
    return lambda *answers: install(monkeypatch, *answers)


async def test_the_connection_goes_to_the_address_checked_with_the_host_name_kept(
    http_server: Served, key_set: dict[str, Any], resolver: Any
) -> None:
    answers = resolver(["127.0.0.1"])
    text = await jwks_module.fetch(http_server.uri(), allow_private=True)
    assert json.loads(text) == {"keys": key_set["keys"]}
    assert answers.calls == 1  # resolved once: the check and the connection use the same answer
    assert http_server.connections == 1 and http_server.hosts == [f"{HOST}:{http_server.port}"]


async def test_https_names_the_host_to_tls_and_checks_the_certificate_against_it(
    https_server: Served, key_set: dict[str, Any], resolver: Any
) -> None:
    answers = resolver(["127.0.0.1"])
    text = await jwks_module.fetch(https_server.uri(), allow_private=True)
    assert json.loads(text) == {"keys": key_set["keys"]}
    assert answers.calls == 1
    assert https_server.server_names == [HOST] and https_server.hosts == [f"{HOST}:{https_server.port}"]
    # Its certificate names HOST only: reached by its address, it is refused.
    with pytest.raises(InvalidClient):
        await jwks_module.fetch(https_server.uri("127.0.0.1"), allow_private=True)


async def test_an_answer_that_changes_to_a_private_address_is_never_connected_to(
    https_server: Served, resolver: Any
) -> None:
    # The check sees a public address; any later resolution would say loopback (the server here).
    answers = resolver([PUBLIC], ["127.0.0.1"])
    started = time.monotonic()
    with pytest.raises(InvalidClient) as refused:
        await jwks_module.fetch(https_server.uri(), allow_private=False)
    assert "could not be fetched" in refused.value.message  # the public address did not serve it
    assert answers.calls == 1
    assert https_server.connections == 0
    assert time.monotonic() - started < jwks_module.TOTAL_SECONDS + 2  # bounded by the fetch's own limit


async def test_a_private_address_among_the_answers_is_refused_before_any_connection(
    https_server: Served, resolver: Any
) -> None:
    answers = resolver([PUBLIC, "127.0.0.1"])
    with pytest.raises(InvalidClient) as refused:
        await jwks_module.fetch(https_server.uri(), allow_private=False)
    assert "not public" in refused.value.message
    assert answers.calls == 1 and https_server.connections == 0


async def test_a_host_that_does_not_resolve_is_refused(resolver: Any) -> None:
    resolver([])
    with pytest.raises(InvalidClient) as refused:
        await jwks_module.fetch(f"https://nowhere{secrets.token_hex(4)}.rebind.test/jwks.json", allow_private=False)
    assert "cannot be resolved" in refused.value.message


@pytest.mark.db
async def test_client_authentication_uses_the_pinned_connection(
    app: Any, client: httpx.AsyncClient, https_server: Served, private_key: Any, resolver: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token endpoint, with the operator's permission for private addresses, fetches the app's
    keys from its jwks_uri through the same path."""
    monkeypatch.setattr(jwks_module, "CACHE", jwks_module.JwksCache())
    answers = resolver(["127.0.0.1"])
    flow = await new_flow(client, token_endpoint_auth_method="private_key_jwt", jwks_uri=https_server.uri())
    monkeypatch.setattr(app.state.ctx.settings, "jwks_uri_allow_private_addresses", True)
    now = int(time.time())
    claims = {"iss": flow.app_id, "sub": flow.app_id, "aud": "http://testserver", "exp": now + 60, "jti": secrets.token_hex(8)}
    response = await client.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": jwt.encode(claims, private_key, algorithm="ES256", headers={"kid": "k1"}),
        },
    )
    assert response.status_code == 200, response.text
    assert answers.calls == 1 and https_server.connections == 1
    assert https_server.server_names == [HOST] and https_server.hosts == [urlsplit(https_server.uri()).netloc]


@pytest.mark.parametrize("uri", ["https://bücher.rebind.test/jwks.json", "https://keys.rebind.test:99999/jwks.json", "ftp://keys.rebind.test/"])
async def test_a_malformed_uri_is_refused_not_fetched(uri: str, resolver: Any) -> None:
    answers = resolver(["127.0.0.1"])
    with pytest.raises(InvalidClient) as refused:
        await jwks_module.fetch(uri, allow_private=True)
    assert "not a URL" in refused.value.message and answers.calls == 0
