"""Interop: Node's openid-client 6 authenticating with ``PrivateKeyJwt`` (RFC 7523,
tests/interop/node/private_key_jwt.mjs) against a real `grantd serve`: discovery, the
client_credentials grant, introspection and revocation, each request with a new assertion the
library signs (iss = sub = client_id, aud = the issuer, a new jti, exp a minute ahead).

The app is registered with ``token_endpoint_auth_method`` private_key_jwt and the public half of
an EC P-256 key generated here as its ``jwks``; node gets the private half as a JWK.

Skipped where node is absent (like tests/test_interop_node.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acting_user import new_app
from support.neucron import Flow
from support.servers import ServerProcess

NODE_DIR = Path(__file__).parent / "interop" / "node"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")


async def test_openid_client_private_key_jwt(interop_server: ServerProcess, interop_dev: Flow) -> None:
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"the npm package openid-client is not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")
    private = ec.generate_private_key(ec.SECP256R1())
    private_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private)), "kid": "interop-1"}
    public_jwk = {name: value for name, value in private_jwk.items() if name != "d"}
    app = await new_app(interop_dev, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk]})
    env = {
        **os.environ,
        "GRANTD_ISSUER": interop_server.base_url,
        "CLIENT_ID": app.app_id,
        "PRIVATE_JWK": json.dumps(private_jwk),
    }
    completed = subprocess.run(
        ["node", "private_key_jwt.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {
        "token_type": "bearer",
        "scope": "read_profile",
        "active": True,
        "client_id": app.app_id,
        "active_after_revocation": False,
    }, report
