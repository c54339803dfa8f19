"""Interop: oauth4webapi and jose from npm (tests/interop/node/flow.mjs) against a real grantd process.

Node plays the app: discovery, the authorization URL with PKCE S256, the callback's state and
iss checks, code for tokens, RFC 9068 validation of the access token with the published JWKS,
refresh, revocation and introspection, all through the libraries. This test plays the user: it
reads the authorization URL from node's stdout, signs in and consents on the hosted pages over
HTTP, and writes the callback URL to node's stdin. `make interop-deps` (a prerequisite of
`make test`) installs the npm packages from the committed package-lock.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from support.interop import AUTH_METHODS, SCOPE, app_for, consent
from support.neucron import Flow
from support.servers import ServerProcess

NODE_DIR = Path(__file__).parent / "interop" / "node"
TIMEOUT = 60

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")


def _require_packages() -> None:
    missing = [name for name in ("oauth4webapi", "jose") if not (NODE_DIR / "node_modules" / name).is_dir()]
    if missing:
        pytest.fail(f"npm packages {missing} are not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")


async def _json_line(stream: asyncio.StreamReader, process: asyncio.subprocess.Process) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), TIMEOUT)
    if not line:
        await process.wait()
        stderr = (await process.stderr.read()).decode(errors="replace") if process.stderr else ""
        raise AssertionError(f"node exited with {process.returncode} before answering:\n{stderr}")
    return json.loads(line)


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_oauth4webapi_authorization_code_flow(auth_method: str, interop_server: ServerProcess, interop_dev: Flow) -> None:
    _require_packages()
    issuer = interop_server.base_url
    public = auth_method == "none"
    flow = await app_for(interop_dev, auth_method)
    user_id = flow.user_id

    environment = {
        **os.environ,
        "GRANTD_ISSUER": issuer,
        "CLIENT_ID": flow.app_id,
        "AUTH_METHOD": auth_method,
        "REDIRECT_URI": flow.redirect_uri,
        "SCOPE": SCOPE,
        "INTROSPECTION_SECRET": flow.key_secret,
    }
    if not public:
        environment["CLIENT_SECRET"] = flow.key_secret
    process = await asyncio.create_subprocess_exec(
        "node",
        "flow.mjs",
        cwd=NODE_DIR,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdin is not None and process.stderr is not None
        authorization_url = (await _json_line(process.stdout, process))["authorization_url"]
        assert authorization_url.startswith(f"{issuer}/oauth2/authorize?")

        callback = await consent(flow, authorization_url)
        assert set(parse_qs(urlsplit(callback).query)) == {"code", "state", "iss"}, callback
        process.stdin.write(callback.encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()

        report = (await _json_line(process.stdout, process))["report"]
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # Discovery: the issuer is GRANTD_ISSUER (oauth4webapi also refuses a mismatch by itself).
    assert report["discovery"]["issuer"] == issuer
    # The callback carried only code, state and iss, and the library accepted state and iss.
    assert report["callback_parameters"] == ["code", "iss", "state"]

    tokens = report["token_response"]
    assert tokens == {
        "cache_control": "no-store",
        "token_type": "bearer",  # oauth4webapi lower-cases it
        "scope": SCOPE,
        "expires_in": tokens["expires_in"],
        "has_refresh_token": True,
    }
    assert tokens["expires_in"] > 0

    for access in (report["access_token"], report["refresh"]["access_token"]):
        assert access["header"]["typ"] == "at+jwt" and access["header"]["alg"] == "ES256"
        claims = access["claims"]
        assert claims == access["jose_payload"]
        assert claims["iss"] == issuer and claims["aud"] == issuer
        assert claims["sub"] == user_id and claims["client_id"] == flow.app_id and claims["scope"] == SCOPE
    first_claims = report["access_token"]["claims"]
    assert report["refresh"]["access_token"]["claims"]["jti"] != first_claims["jti"]

    access_info = report["introspection"]["access"]
    assert access_info["active"] is True
    assert access_info["scope"] == SCOPE and access_info["client_id"] == flow.app_id
    assert access_info["sub"] == user_id and access_info["exp"] == first_claims["exp"]
    assert report["introspection"]["refresh"]["active"] is True

    refresh = report["refresh"]
    assert refresh["rotated"] is True and refresh["scope"] == SCOPE
    assert refresh["old_refresh_introspection"] == {"active": False}
    assert refresh["new_access_introspection"]["active"] is True

    revocation = report["revocation"]
    assert revocation["after_access_revoked"]["access"] == {"active": False}
    assert revocation["after_access_revoked"]["refresh"]["active"] is True
    assert revocation["after_refresh_revoked"] == {"active": False}
    assert revocation["refresh_with_revoked"]["error"] == "invalid_grant", revocation
