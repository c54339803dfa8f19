"""Interop: Node's openid-client 6 registering itself with ``dynamicClientRegistration`` (RFC 7591,
tests/interop/node/registration.mjs) at a real `grantd serve` with GRANTD_DYNAMIC_REGISTRATION=token,
then getting a token with the credentials it was given; the registration is then read, replaced and
deleted with raw RFC 7592 requests.

Skipped where node is absent (like tests/test_interop_node.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acting_user import developer
from support.servers import ServerProcess, server_on_new_sqlite

NODE_DIR = Path(__file__).parent / "interop" / "node"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")


@pytest.fixture(scope="module")
def registration_server(secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_on_new_sqlite(
        tmp_path_factory, secret_key, "interop-registration", env={"GRANTD_DYNAMIC_REGISTRATION": "token"}
    ) as server:
        yield server


async def test_openid_client_dynamic_registration(registration_server: ServerProcess) -> None:
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"the npm package openid-client is not installed in {NODE_DIR}: run `make interop-deps` (npm ci there).")
    base = registration_server.base_url
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        dev = await developer(http)
        response = await http.post("/v1/registration-tokens", json={"expires_in": 3600}, headers={"Authorization": dev.dev_token})
        assert response.status_code == 200, response.text
        initial_access_token = response.json()["data"]["initial_access_token"]

    env = {**os.environ, "GRANTD_ISSUER": base, "INITIAL_ACCESS_TOKEN": initial_access_token}
    completed = subprocess.run(["node", "registration.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    client_id = report["client_id"]
    assert report["registration_endpoint"] == f"{base}/oauth2/register"
    assert report["client_secret"].startswith("gks_") and report["registration_access_token"]
    assert report["registration_client_uri"] == f"{base}/oauth2/register/{client_id}"
    assert (report["token_type"], report["scope"], report["active"], report["introspected_client_id"]) == (
        "bearer", "read_profile", True, client_id
    )

    # RFC 7592 with raw requests: read, replace, delete.
    bearer = {"Authorization": f"Bearer {report['registration_access_token']}"}
    async with httpx.AsyncClient(timeout=30) as http:
        uri = report["registration_client_uri"]
        read = await http.get(uri, headers=bearer)
        assert read.status_code == 200, read.text
        assert read.json()["client_name"] == "openid-client registered"
        # The developer whose token registered it owns it.
        listed = await http.get(f"{base}/v1/apps", headers={"Authorization": dev.dev_token})
        assert client_id in [app["app_id"] for app in listed.json()["data"]["apps"]]

        replaced = {**read.json(), "client_name": "Renamed by RFC 7592", "redirect_uris": ["https://rp.example.org/cb2"]}
        response = await http.put(uri, json=replaced, headers=bearer)
        assert response.status_code == 200, response.text
        assert response.json()["client_name"] == "Renamed by RFC 7592"
        assert response.json()["redirect_uris"] == ["https://rp.example.org/cb2"]

        response = await http.delete(uri, headers=bearer)
        assert response.status_code == 204
        assert (await http.get(uri, headers=bearer)).status_code == 401
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": report["client_secret"]}
        response = await http.post(f"{base}/oauth2/token", data=form)
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
