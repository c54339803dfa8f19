"""Interop: Neucron's own v1 JavaScript SDK (npm ``neucron-sdk`` 0.2.3, tests/interop/neucron-sdk/flow.mjs)
against a real grantd process.

The SDK signs a new user up, logs them in and keeps the token it reads from the answer; the user
authorizes an app with v1's POST /oauth/authorize and the app's backend redeems the code at POST
/oauth/token, both through the SDK's own request helper (0.2.3 has no OAuth methods of its own).
grantd's log-in answers both SDKs (the v1 envelope plus v2's top-level ``token`` and ``platforms``):
this is the v1 side of that proof, with the client Neucron published for v1. Then this test checks
what a user of the SDK would: the token the SDK kept is the user's and works at a v1 call, the
access token is live at introspection, and the code is single-use.

`make interop-deps` (a prerequisite of `make test`) installs the SDK from the committed
package-lock.json; its package.json overrides the SDK's dependency on ``fs@^0.0.1-security``, a
placeholder the npm registry no longer serves (Node's built-in ``fs`` is what the SDK loads anyway).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import secret_harvest
from acting_user import new_app
from support.neucron import PASSWORD, Flow, assert_error, unique_email
from support.servers import ServerProcess

SDK_DIR = Path(__file__).parent / "interop" / "neucron-sdk"
PERMISSIONS = "read_profile,write_data"
TIMEOUT = 60

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) is not installed on this machine")


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def _run_sdk(environment: dict[str, str]) -> dict[str, Any]:
    if not (SDK_DIR / "node_modules" / "neucron-sdk").is_dir():
        pytest.fail(f"npm package neucron-sdk is not installed in {SDK_DIR}: run `make interop-deps` (npm ci there).")
    process = await asyncio.create_subprocess_exec(
        "node",
        "flow.mjs",
        cwd=SDK_DIR,
        env={**os.environ, **environment},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"node exited with {process.returncode}:\n{stderr.decode(errors='replace')}"
    report = json.loads(stdout)["report"]
    # Node's HTTP is not harvested: the tokens and the code it obtained join the whole-suite secret scan here.
    secret_harvest.HARVEST.keep_fields(report, "neucron-sdk: an answer to Neucron's v1 JS SDK")
    return report


async def test_neucron_v1_sdk_signs_up_logs_in_and_completes_the_v1_oauth_flow(
    interop_server: ServerProcess, interop_dev: Flow
) -> None:
    base_url = interop_server.base_url
    app = await new_app(interop_dev, permissions=PERMISSIONS)
    email = unique_email()
    report = await _run_sdk(
        {
            "GRANTD_URL": base_url,
            "EMAIL": email,
            "PASSWORD": PASSWORD,
            "APP_ID": app.app_id,
            "APP_KEY": app.app_key,
            "REDIRECT_URI": app.redirect_uri,
            "PERMISSIONS": PERMISSIONS,
            "KEY_ID": app.key_id,
            "KEY_SECRET": app.key_secret,
        }
    )

    # The SDK's hard-coded base URL ends in /v1; each of its requests reached this server under /v1,
    # JSON, with the user's token as the SDK sends it (no "Bearer ") on the authorized call only.
    assert report["sdk_base_url"] == "https://dev.neucron.io/v1"
    assert report["requests"] == [
        {"method": "POST", "url": f"{base_url}/v1{path}", "content_type": "application/json", "authorization": auth}
        for path, auth in [
            ("/auth/signup", None),
            ("/auth/signup", None),
            ("/auth/login", None),
            ("/auth/login", None),
            ("/oauth/authorize", "raw"),
            ("/oauth/token", None),
        ]
    ]

    # signUp: the v1 envelope, and the SDK keeps its access token.
    signup = report["signup"]["response"]
    assert set(signup) == {"data", "status_code"} and signup["status_code"] == 200, signup
    assert set(signup["data"]) == {"user_id", "access_token", "expires_at"}
    user_id = signup["data"]["user_id"]
    assert report["signup"]["sdk_token"] == signup["data"]["access_token"]
    assert report["signup_again"]["message"] == "Signup request failed: Error: Request failed with status code 409"

    # login: the dual answer. The SDK reads data.access_token; v2's token is the same one.
    login = report["login"]["response"]
    assert set(login) == {"data", "status_code", "token", "platforms"} and login["status_code"] == 200, login
    assert set(login["data"]) == {"access_token", "user_id", "expires_at"}
    user_token = report["login"]["sdk_token"]
    assert user_token == login["data"]["access_token"] == login["token"]
    assert login["platforms"] == []
    assert login["data"]["user_id"] == user_id
    claims = _claims(user_token)
    assert claims["sub"] == claims["user_id"] == user_id
    expires_at = login["data"]["expires_at"]
    assert expires_at.endswith("Z") and datetime.fromisoformat(expires_at).timestamp() == claims["exp"]
    wrong = report["login_wrong_password"]
    # The SDK turns axios' error into a message of its own, without the answer, and keeps no token.
    assert wrong["error"]["message"] == "Authentication request failed: Error: Request failed with status code 401"
    assert wrong["sdk_token"] is None

    # v1 OAuth through the SDK's request helper: a code for this user, then an access token for it.
    authorize = report["authorize"]
    assert set(authorize) == {"data", "status_code"} and authorize["status_code"] == 200, authorize
    assert authorize["data"]["user_id"] == user_id
    code = authorize["data"]["code"]
    token = report["token"]
    assert set(token) == {"data", "status_code"} and token["status_code"] == 200, token
    access_token = token["data"]["access_token"]
    access_claims = _claims(access_token)
    assert access_claims["sub"] == user_id and access_claims["client_id"] == app.app_id
    assert access_claims["permissions"] == PERMISSIONS.split(",")

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        # The user token the SDK kept works at a v1 call, sent as the SDK sends it: the app is granted.
        grants = await http.get("/v1/grants", headers={"Authorization": user_token})
        assert grants.status_code == 200, grants.text
        [grant] = grants.json()["data"]["grants"]
        assert grant["app_id"] == app.app_id and grant["permissions"] == PERMISSIONS
        # The access token is live for the app that redeemed it.
        basic = base64.b64encode(f"{app.app_id}:{app.key_secret}".encode()).decode()
        introspect = lambda: http.post(  # noqa: E731
            "/oauth2/introspect", data={"token": access_token}, headers={"Authorization": f"Basic {basic}"}
        )
        live = (await introspect()).json()
        assert live["active"] is True, live
        assert live["sub"] == user_id and live["client_id"] == app.app_id
        assert set(live["scope"].split()) == set(PERMISSIONS.split(","))
        # The same request again within the grace window is a retry: the same token, still live.
        body = {"token": {"auth_code": code, "key_id": app.key_id, "key_secret": app.key_secret}}
        retried = await http.post("/v1/oauth/token", json=body)
        assert retried.status_code == 200, retried.text
        assert _claims(retried.json()["data"]["access_token"])["jti"] == access_claims["jti"]
        assert (await introspect()).json()["active"] is True
        # The code was single-use: presented by another key of the app, refused, and what it issued is revoked.
        created = await http.post(f"/v1/apps/{app.app_id}/keys", headers={"Authorization": app.dev_token})
        assert created.status_code == 200, created.text
        spare = created.json()["data"]
        replay = await http.post(
            "/v1/oauth/token", json={"token": {**body["token"], "key_id": spare["key_id"], "key_secret": spare["key_secret"]}}
        )
        assert_error(replay, 401, "invalid_grant")
        assert (await introspect()).json() == {"active": False}
