"""grantd.sdk for a resource server that names itself (RFC 8707 audience) and publishes its
OAuth 2.0 Protected Resource Metadata (RFC 9728): the document, its well-known URL, the
``resource_metadata`` of every 401; and examples/mcp_server, an MCP server protected this way,
called through the official ``mcp`` client with a token from a real ``grantd serve``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from grantd.sdk import (
    AccessToken,
    InvalidTokenError,
    ProtectedResourceMetadataMiddleware,
    TokenVerifier,
    metadata_url,
    protect,
    require_permissions,
)
from support.asgi import serve
from support.challenges import parse_challenges
from support.neucron import new_flow
from support.servers import free_port, server_on_new_sqlite, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "https://auth.example"
ALGS = ["ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]


class Issuer:
    """An issuer key whose JWKS is served over a socket, and tokens signed with it."""

    def __init__(self, jwks_uri: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.jwks_uri, self.key = jwks_uri, key

    def verifier(self, **options: Any) -> TokenVerifier:
        return TokenVerifier(ISSUER, jwks_uri=self.jwks_uri, **options)

    def token(self, aud: Any, permissions: tuple[str, ...] = ("read_profile",)) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER, "aud": aud, "sub": "app-1", "client_id": "app-1", "jti": str(uuid.uuid4()),
            "scope": " ".join(permissions), "permissions": list(permissions), "iat": now, "exp": now + 300,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "ES256", "use": "sig"}
    with serve(Starlette(routes=[Route("/jwks", lambda request: JSONResponse({"keys": [jwk]}))])) as base:
        yield Issuer(f"{base}/jwks", key)


# ---------------------------------------------------------------- the resource as audience


def test_the_metadata_url_inserts_the_well_known_path_before_the_resources_path() -> None:
    """RFC 9728 §3.1, with its own examples."""
    assert metadata_url("https://resource.example.com") == "https://resource.example.com/.well-known/oauth-protected-resource"
    assert metadata_url("https://resource.example.com/") == "https://resource.example.com/.well-known/oauth-protected-resource"
    assert metadata_url("https://resource.example.com/resource1") == "https://resource.example.com/.well-known/oauth-protected-resource/resource1"
    assert metadata_url("http://127.0.0.1:8002/mcp?tenant=a") == "http://127.0.0.1:8002/.well-known/oauth-protected-resource/mcp?tenant=a"


def test_a_verifier_naming_its_resource_accepts_only_tokens_for_it(issuer: Issuer) -> None:
    resource = "https://mcp.example.com/mcp"
    verifier = issuer.verifier(resource=resource)
    assert verifier.audience == resource
    for aud in (resource, [resource], ["https://other.example", resource]):
        assert verifier.verify(issuer.token(aud)).app_id == "app-1", aud
    for aud in (ISSUER, [ISSUER], "https://mcp.example.com/mcp/", "https://mcp.example.com", "HTTPS://MCP.EXAMPLE.COM/mcp", [], "https://mcp.example.com/mcp2"):
        with pytest.raises(InvalidTokenError) as caught:
            verifier.verify(issuer.token(aud))
        assert (caught.value.reason, caught.value.error) == ("wrong_audience", "invalid_token"), aud
    # Without a resource, the issuer is the audience, as before.
    assert issuer.verifier().verify(issuer.token(ISSUER)).app_id == "app-1"
    with pytest.raises(InvalidTokenError):
        issuer.verifier().verify(issuer.token(resource))


def test_a_resource_that_is_not_an_absolute_uri_or_disagrees_with_audience_is_refused() -> None:
    for resource in ("mcp.example.com/mcp", "/mcp", "https://mcp.example.com/mcp#frag", "urn:example:api"):
        with pytest.raises(ValueError):
            TokenVerifier(ISSUER, resource=resource)
    with pytest.raises(ValueError):
        TokenVerifier(ISSUER, resource="https://mcp.example.com/mcp", audience="https://other.example")
    assert TokenVerifier(ISSUER, resource="https://a.example/x", audience="https://a.example/x").audience == "https://a.example/x"


# ---------------------------------------------------------------- the document and the challenge, over HTTP


async def hello(request: Request) -> JSONResponse:
    token: AccessToken = request.state.access_token
    return JSONResponse({"app_id": token.app_id})


def test_protect_serves_the_document_and_names_it_in_every_401(issuer: Issuer) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/api"
    verifier = issuer.verifier(resource=resource)
    app = protect(
        Starlette(routes=[Route("/api", hello), Route("/api/other", hello)]),
        verifier,
        permissions=["read_profile"],
        resource_name="Example API",
        resource_documentation="https://docs.example/api",
    )
    with serve(app, port=port) as base:
        assert base == f"http://127.0.0.1:{port}"
        missing = httpx.get(f"{base}/api")
        assert missing.status_code == 401
        challenges = parse_challenges(missing.headers["www-authenticate"])
        assert challenges == {
            "Bearer": {"realm": resource, "resource_metadata": f"{base}/.well-known/oauth-protected-resource/api"},
            "DPoP": {"realm": resource, "algs": " ".join(ALGS), "resource_metadata": f"{base}/.well-known/oauth-protected-resource/api"},
        }
        wrong_audience = httpx.get(f"{base}/api", headers={"Authorization": f"Bearer {issuer.token(ISSUER)}"})
        assert wrong_audience.status_code == 401
        bearer = parse_challenges(wrong_audience.headers["www-authenticate"])["Bearer"]
        assert bearer["error"] == "invalid_token" and bearer["resource_metadata"] == challenges["Bearer"]["resource_metadata"]

        # What a client does next (RFC 9728 §3.3): fetch the document, check it names the resource it asked about.
        fetched = httpx.get(challenges["Bearer"]["resource_metadata"])
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "application/json"
        document = fetched.json()
        assert document == {
            "resource": resource,
            "authorization_servers": [ISSUER],
            "scopes_supported": ["read_profile"],
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ALGS,
            "dpop_bound_access_tokens_required": False,
            "resource_name": "Example API",
            "resource_documentation": "https://docs.example/api",
        }
        # The bare well-known path answers too; other methods are not allowed; the app behind is untouched.
        assert httpx.get(f"{base}/.well-known/oauth-protected-resource").json() == document
        assert httpx.post(f"{base}/.well-known/oauth-protected-resource/api").status_code == 405
        head = httpx.head(challenges["Bearer"]["resource_metadata"])
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(fetched.content)
        assert httpx.get(f"{base}/.well-known/oauth-protected-resource/other").status_code == 401
        ok = httpx.get(f"{base}/api/other", headers={"Authorization": f"Bearer {issuer.token(resource)}"})
        assert ok.status_code == 200 and ok.json() == {"app_id": "app-1"}
        denied = httpx.get(f"{base}/api", headers={"Authorization": f"Bearer {issuer.token(resource, ())}"})
        assert denied.status_code == 403
        assert parse_challenges(denied.headers["www-authenticate"])["Bearer"]["resource_metadata"] == challenges["Bearer"]["resource_metadata"]


def test_a_fastapi_app_with_the_metadata_middleware_and_dpop_required(issuer: Issuer) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}"
    verifier = issuer.verifier(resource=resource, dpop_required=True)
    app = FastAPI()
    app.add_middleware(ProtectedResourceMetadataMiddleware, verifier=verifier, scopes_supported=["read_profile", "write_data"])
    guard = Depends(require_permissions("read_profile", verifier=verifier))

    @app.get("/things")
    async def things(token: AccessToken = guard) -> dict[str, str]:
        return {"app_id": token.app_id}

    with serve(app, port=port) as base:
        document = httpx.get(f"{base}/.well-known/oauth-protected-resource").json()
        assert document["resource"] == resource and document["dpop_bound_access_tokens_required"] is True
        assert document["scopes_supported"] == ["read_profile", "write_data"]
        refused = httpx.get(f"{base}/things", headers={"Authorization": f"Bearer {issuer.token(resource)}"})
        assert refused.status_code == 401 and refused.json()["detail"]["error"] == "invalid_token"
        challenges = parse_challenges(refused.headers["www-authenticate"])
        assert list(challenges) == ["DPoP"], "a resource requiring DPoP offers no Bearer challenge"
        assert challenges["DPoP"]["resource_metadata"] == f"{base}/.well-known/oauth-protected-resource"
        assert challenges["DPoP"]["error"] == "invalid_token"


def test_the_metadata_needs_a_verifier_that_names_its_resource(issuer: Issuer) -> None:
    with pytest.raises(ValueError):
        protect(Starlette(), issuer.verifier())


# ---------------------------------------------------------------- examples/mcp_server against a real grantd


def client_credentials(base_url: str, app_id: str, secret: str, scope: str) -> str:
    response = httpx.post(
        f"{base_url}/oauth2/token", data={"grant_type": "client_credentials", "scope": scope}, auth=(app_id, secret), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_the_ten_lines_of_docs_mcp_md_protect_an_mcp_server() -> None:
    """The block of docs/mcp.md, run as written, with local URLs for grantd and the MCP endpoint."""
    text = (ROOT / "docs" / "mcp.md").read_text()
    block = re.search(r"<!-- mcp-ten-lines:start -->\s*```python\n(.*?)```\s*<!-- mcp-ten-lines:end -->", text, re.S)
    assert block, "docs/mcp.md has no mcp-ten-lines block"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "ES256", "use": "sig"}
    issuer_port = free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    discovery = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
    authorization_server = Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", lambda request: JSONResponse(discovery)),
            Route("/jwks", lambda request: JSONResponse({"keys": [jwk]})),
        ]
    )
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/mcp"
    code = code.replace("https://auth.example.com", issuer).replace("https://mcp.example.com/mcp", endpoint)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/mcp.md", "exec"), namespace)
    now = int(time.time())
    claims = {"iss": issuer, "aud": endpoint, "sub": "app-1", "client_id": "app-1", "jti": "t1", "scope": "read_profile", "iat": now, "exp": now + 300}
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})
    wrong_audience = jwt.encode({**claims, "aud": issuer, "jti": "t2"}, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})

    async def add() -> Any:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            async with Client(streamable_http_client(endpoint, http_client=http)) as client:
                return (await client.call_tool("add", {"a": 2, "b": 3})).structured_content

    with serve(authorization_server, port=issuer_port), serve(namespace["app"], port=port, lifespan="on"):
        refused = httpx.post(endpoint, json={}, timeout=10)
        assert refused.status_code == 401
        metadata = parse_challenges(refused.headers["www-authenticate"])["Bearer"]["resource_metadata"]
        assert metadata == f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
        assert httpx.get(metadata, timeout=10).json()["authorization_servers"] == [issuer]
        other = httpx.post(endpoint, json={}, headers={"Authorization": f"Bearer {wrong_audience}"}, timeout=10)
        assert other.status_code == 401 and other.json()["error_description"] == "The access token is meant for another audience."
        assert asyncio.run(add()) == {"result": 5}


async def call_whoami(endpoint: str, token: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with Client(streamable_http_client(endpoint, http_client=http)) as client:
            tools = await client.list_tools()
            assert [tool.name for tool in tools.tools] == ["whoami"]
            result = await client.call_tool("whoami", {})
            assert not result.is_error, result
            return dict(result.structured_content or {})


def test_the_example_mcp_server_is_called_through_the_mcp_client_with_a_grantd_token(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, secret_key: str
) -> None:
    """grantd issues tokens whose aud is the MCP server's endpoint (GRANTD_ACCESS_TOKEN_AUDIENCE);
    the example, started as docs/mcp.md says, answers 401 with its metadata to a client without
    one, and the tool to the mcp client that brings one."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/mcp"
    with server_on_new_sqlite(tmp_path_factory, secret_key, "mcp", env={"GRANTD_ACCESS_TOKEN_AUDIENCE": endpoint}) as grantd:
        flow = asyncio.run(_new_flow(grantd.base_url))
        token = client_credentials(grantd.base_url, flow.app_id, flow.key_secret, "read_profile")
        assert jwt.decode(token, options={"verify_signature": False})["aud"] == endpoint
        weaker = client_credentials(grantd.base_url, flow.app_id, flow.key_secret, "write_data")

        log_path = tmp_path / "mcp_server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", "examples/mcp_server", "main:app", "--port", str(port)],
                cwd=ROOT,
                env={**os.environ, "GRANTD_ISSUER": grantd.base_url, "MCP_RESOURCE": endpoint},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            metadata = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
            wait_until_answers(metadata, server, log_path, seconds=30, what="the MCP server")

            # Without a token: 401, and from the challenge to grantd's own metadata, as an MCP client finds its way.
            refused = httpx.post(endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "initialize"}, timeout=10)
            assert refused.status_code == 401
            challenge = parse_challenges(refused.headers["www-authenticate"])["Bearer"]
            assert challenge == {"realm": endpoint, "resource_metadata": metadata}
            document = httpx.get(challenge["resource_metadata"], timeout=10).json()
            assert document["resource"] == endpoint and document["scopes_supported"] == ["read_profile"]
            (authorization_server,) = document["authorization_servers"]
            assert authorization_server == grantd.base_url
            server_metadata = httpx.get(f"{authorization_server}/.well-known/oauth-authorization-server", timeout=10).json()
            assert server_metadata["issuer"] == grantd.base_url and "client_credentials" in server_metadata["grant_types_supported"]

            # With the token: the tool, through the official MCP client over streamable HTTP.
            answer = asyncio.run(call_whoami(endpoint, token))
            assert answer == {"app_id": flow.app_id, "user_id": None, "permissions": ["read_profile"], "dpop_bound": False}

            # A token without the permission: 403 insufficient_scope; the mcp client fails to connect.
            denied = httpx.post(endpoint, json={}, headers={"Authorization": f"Bearer {weaker}"}, timeout=10)
            assert denied.status_code == 403
            assert parse_challenges(denied.headers["www-authenticate"])["Bearer"]["error"] == "insufficient_scope"
            with pytest.raises(BaseException):
                asyncio.run(asyncio.wait_for(call_whoami(endpoint, weaker), 30))
        finally:
            server.terminate()
            server.wait(10)
        assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")


async def _new_flow(base_url: str) -> Any:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await new_flow(client)
