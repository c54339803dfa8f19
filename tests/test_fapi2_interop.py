"""Interop: openid-client 6 (Node) as the app of a FAPI 2.0 profile against a real `grantd serve`
(tests/interop/node/fapi2.mjs): the library authenticates with its own private_key_jwt assertions,
pushes the request with PKCE S256, checks the callback's state and ``iss`` and the ID token, redeems
the code and refreshes, getting the same refresh token back. The profile requires DPoP: the library
sends a proof with every request (its ``getDPoPHandle``), and its tokens are bound to its key, whose
thumbprint the test computes itself; UserInfo answers the bound token with a proof and refuses it as a
bearer token. The user signs in and consents on the real pages (``ActingUser``). Skipped where node is
absent (like tests/test_interop_node.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acting_user import ActingUser, new_app
from support.dpop import jkt_of
from support.neucron import PASSWORD, Flow
from support.servers import ServerProcess

NODE_DIR = Path(__file__).parent / "interop" / "node"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")


async def test_openid_client_as_a_fapi2_app(interop_server: ServerProcess, interop_dev: Flow) -> None:
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"the npm package openid-client is not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")
    private = ec.generate_private_key(ec.SECP256R1())
    private_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private)), "kid": "fapi-1"}
    public_jwk = {name: value for name, value in private_jwk.items() if name != "d"}
    app = await new_app(
        interop_dev, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk]}, security_profile="fapi2",
        permissions="read_profile",
    )
    env = {
        **os.environ, "GRANTD_ISSUER": interop_server.base_url, "CLIENT_ID": app.app_id,
        "PRIVATE_JWK": json.dumps(private_jwk), "REDIRECT_URI": app.redirect_uri,
    }
    node = await asyncio.create_subprocess_exec(
        "node", "fapi2.mjs", cwd=NODE_DIR, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert node.stdin is not None and node.stdout is not None and node.stderr is not None
    try:
        line = await asyncio.wait_for(node.stdout.readline(), 60)
        assert line, (await node.stderr.read()).decode()
        question = json.loads(line)
        assert question["ask"] == "authorize"
        async with httpx.AsyncClient(timeout=30) as browser:
            landed = await ActingUser(browser, interop_dev.extra["email"], PASSWORD).authorize(question["url"], app.redirect_uri)
        node.stdin.write((json.dumps({"url": landed}) + "\n").encode())
        await node.stdin.drain()
        line = await asyncio.wait_for(node.stdout.readline(), 60)
        assert line, (await node.stderr.read()).decode()
        report = json.loads(line)["report"]
    finally:
        if node.returncode is None:
            node.kill()
        await node.wait()
    public = report.pop("dpop_public_jwk")
    assert public["kty"] == "EC" and "d" not in public
    bound = {"jkt": jkt_of(public)}
    assert report == {
        "authorization_url_parameters": ["client_id", "request_uri"],  # only the pushed request's reference
        "callback_iss": interop_server.base_url,
        "scope": "openid read_profile",
        "id_token_aud": app.app_id,
        "same_refresh_token": True,
        "new_access_token": True,
        "token_type": "dpop",  # the library's spelling of the answer's DPoP
        "cnf": bound,
        "refreshed_token_type": "dpop",
        "refreshed_cnf": bound,
        "userinfo_sub_matches": True,
        "userinfo_as_bearer": {
            "status": 401, "code": "OAUTH_WWW_AUTHENTICATE_CHALLENGE",
            "challenges": [["bearer", "invalid_token"], ["dpop", None]],  # RFC 9449 §7.2; the DPoP challenge names its algs
        },
    }, report
