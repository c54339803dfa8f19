"""Interop: DPoP (RFC 9449) by two client libraries no one here wrote, against a real `grantd serve`,
the user signing in and consenting on the hosted pages over HTTP (ActingUser).

- Node's openid-client 6 (``getDPoPHandle``, tests/interop/node/dpop.mjs): client_credentials;
  code + PKCE S256 with ``dpop_jkt``; UserInfo with the bound token; refresh; introspection — for
  a confidential and a public client, and once against a server that requires its nonces (the
  library retries on ``use_dpop_nonce`` by itself).
- Python's requests-oauth2client (``DPoPKey``, ``DPoPToken``): client_credentials, code + PKCE
  with ``dpop_jkt``, UserInfo with the library's own proofs, refresh.

Each checks what a client sees: ``token_type`` DPoP, ``cnf.jkt`` the thumbprint of the library's
key, UserInfo answering, introspection saying DPoP. Node's part is skipped where node is absent
(like tests/test_interop_node.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from requests_oauth2client import ClientSecretBasic, DPoPToken, OAuth2Client

from acting_user import ActingUser, developer, new_app
from support.neucron import PASSWORD, Flow
from support.servers import ServerProcess, server_on_new_sqlite

NODE_DIR = Path(__file__).parent / "interop" / "node"
TIMEOUT = 60
_node = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")


def _cnf(token: str) -> Any:
    return jwt.decode(token, options={"verify_signature": False}).get("cnf")


async def _run_node(base_url: str, app: Flow, *, public: bool) -> dict[str, Any]:
    """dpop.mjs for ``app``, the end user answering its authorization URL on the pages; its report."""
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"the npm package openid-client is not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")
    env = {**os.environ, "GRANTD_ISSUER": base_url, "CLIENT_ID": app.app_id, "REDIRECT_URI": app.redirect_uri}
    env.pop("CLIENT_SECRET", None)
    if not public:
        env["CLIENT_SECRET"] = app.key_secret
    process = await asyncio.create_subprocess_exec(
        "node", "dpop.mjs", cwd=NODE_DIR, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    try:
        async with httpx.AsyncClient(timeout=10) as browser:
            user = ActingUser(browser, app.extra["email"], PASSWORD)
            while True:
                line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
                if not line:
                    raise AssertionError(f"node stopped before its report:\n{(await process.stderr.read()).decode()}")
                message = json.loads(line)
                if "report" in message:
                    break
                location = await user.authorize(message["url"], app.redirect_uri)
                process.stdin.write(json.dumps({"url": location}).encode() + b"\n")
                await process.stdin.drain()
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, (await process.stderr.read()).decode()
        return message["report"]  # type: ignore[no-any-return]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _assert_node_report(report: dict[str, Any], *, public: bool) -> None:
    bound = {"jkt": report["jkt"]}
    assert report["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256", "PS256"]
    assert report["code"] == {"token_type": "dpop", "cnf": bound, "userinfo_sub_matches": True}, report
    assert report["refresh"] == {"token_type": "dpop", "cnf": bound, "userinfo_sub_matches": True}, report
    if public:
        assert "client_credentials" not in report and "introspection" not in report
    else:
        assert report["client_credentials"] == {"token_type": "dpop", "cnf": bound}, report
        assert report["introspection"] == {"active": True, "token_type": "DPoP", "cnf": bound}, report


@_node
@pytest.mark.parametrize("client_type", ["confidential", "public"])
async def test_openid_client_dpop(interop_server: ServerProcess, interop_dev: Flow, client_type: str) -> None:
    app = await new_app(interop_dev, client_type=client_type)
    report = await _run_node(interop_server.base_url, app, public=client_type == "public")
    _assert_node_report(report, public=client_type == "public")


@_node
async def test_openid_client_dpop_with_server_nonces(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> None:
    with server_on_new_sqlite(tmp_path_factory, secret_key, "interop-dpop-nonce", env={"GRANTD_DPOP_NONCE": "true"}) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            app = await new_app(await developer(http), client_type="confidential")
            report = await _run_node(server.base_url, app, public=False)
    _assert_node_report(report, public=False)


async def test_requests_oauth2client_dpop(interop_server: ServerProcess, interop_dev: Flow) -> None:
    issuer = interop_server.base_url
    app = await new_app(interop_dev, client_type="confidential")
    document = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    client = OAuth2Client.from_discovery_document(
        document, issuer=issuer, auth=ClientSecretBasic(app.app_id, app.key_secret), redirect_uri=app.redirect_uri,
        testing=True, id_token_signed_response_alg="RS256",
    )
    client.update_authorization_server_public_keys()

    token = client.client_credentials(scope="read_profile", dpop=True)
    assert isinstance(token, DPoPToken) and token.token_type == "DPoP"
    assert _cnf(str(token.access_token)) == {"jkt": token.dpop_key.dpop_jkt}

    # Code + PKCE, the request carrying dpop_jkt; the code redeemed with the same key's proof.
    request = client.authorization_request(
        scope="openid read_profile", dpop=True,
        authorization_response_iss_parameter_supported=client.authorization_response_iss_parameter_supported,
    )
    assert request.args["dpop_jkt"] == request.dpop_key.dpop_jkt
    async with httpx.AsyncClient(timeout=10) as browser:
        location = await ActingUser(browser, interop_dev.extra["email"], PASSWORD).authorize(str(request.uri), app.redirect_uri)
    # validate=False: the library's ID token validation rebuilds the token without its DPoP key (it
    # fails with a TypeError of its own); ID tokens are validated by the other interop tests.
    token = client.authorization_code(request.validate_callback(location), validate=False)
    assert isinstance(token, DPoPToken) and token.token_type == "DPoP"
    assert _cnf(str(token.access_token)) == {"jkt": request.dpop_key.dpop_jkt}
    # UserInfo with the library's own proofs (Authorization: DPoP, ath).
    assert client.userinfo(token)["sub"] == app.user_id
    by_get = requests.get(client.userinfo_endpoint, auth=token, timeout=10)
    assert by_get.status_code == 200 and by_get.json()["sub"] == app.user_id, by_get.text
    # The same token as a bearer token is refused (RFC 9449 §7.2).
    as_bearer = requests.get(client.userinfo_endpoint, headers={"Authorization": f"Bearer {token.access_token}"}, timeout=10)
    assert as_bearer.status_code == 401 and as_bearer.json()["error"] == "invalid_token"
    # Refresh with the key's proof: a new bound token.
    refreshed = client.refresh_token(token, dpop_key=token.dpop_key)
    assert isinstance(refreshed, DPoPToken) and _cnf(str(refreshed.access_token)) == {"jkt": token.dpop_key.dpop_jkt}
    assert client.userinfo(refreshed)["sub"] == app.user_id
