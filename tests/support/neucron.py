"""The Neucron dialect from a client's side: accounts, a developer's app with a key and an end user
ready to authorize (``Flow``), and the shapes of its answers (the envelope, the error body).

The fixture ``flow`` (tests/conftest.py) is a ``new_flow`` on the in-process app; the same helpers
drive real server processes when given a client of one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

PASSWORD = "correct horse battery"


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Flow:
    """One developer with one app and key, and one end user, ready to authorize."""

    client: httpx.AsyncClient
    user_token: str = ""
    user_id: str = ""
    dev_token: str = ""
    app_id: str = ""
    app_key: str = ""
    key_id: str = ""
    key_secret: str = ""
    redirect_uri: str = "https://app.example.com/callback"
    app_permissions: str = "read_profile,write_data"
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self, **overrides: Any) -> dict[str, Any]:
        params = {
            "app_id": self.app_id,
            "app_key": self.app_key,
            "state": "state-123",
            "redirect_uri": self.redirect_uri,
            "permissions": "read_profile",
        }
        params.update(overrides)
        return params

    async def authorize(self, **overrides: Any) -> httpx.Response:
        return await self.client.post(
            "/oauth/authorize", json={"token": self.params(**overrides)}, headers={"Authorization": f"Bearer {self.user_token}"}
        )

    async def grant(self, **overrides: Any) -> httpx.Response:
        return await self.client.patch(
            "/oauth/permissions/grant",
            json={"permissions": self.params(**overrides)},
            headers={"Authorization": f"Bearer {self.user_token}"},
        )

    async def code(self, **overrides: Any) -> str:
        response = await self.authorize(**overrides)
        assert response.status_code == 200, response.text
        return response.json()["data"]["code"]

    async def redeem(self, code: str, **overrides: Any) -> httpx.Response:
        body = {"auth_code": code, "key_id": self.key_id, "key_secret": self.key_secret}
        body.update(overrides)
        return await self.client.post("/oauth/token", json={"token": body})


async def sign_up(client: httpx.AsyncClient, email: str | None = None) -> tuple[str, str]:
    """(user_id, user token) of a new account."""
    response = await client.post("/v1/auth/signup", json={"email": email or unique_email(), "password": PASSWORD})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data["user_id"], data["access_token"]


async def new_flow(client: httpx.AsyncClient, **app_fields: Any) -> Flow:
    flow = Flow(client)
    _, flow.dev_token = await sign_up(client)
    flow.user_id, flow.user_token = await sign_up(client)
    body = {"name": "Test App", "redirect_uris": [flow.redirect_uri], "permissions": flow.app_permissions}
    body.update(app_fields)
    response = await client.post("/v1/apps", json=body, headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    app_data = response.json()["data"]
    flow.app_id, flow.app_key = app_data["app_id"], app_data["app_key"]
    response = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    key = response.json()["data"]
    flow.key_id, flow.key_secret = key["key_id"], key["key_secret"]
    return flow


def ok(response: httpx.Response) -> Any:
    """The response is a Neucron success: 200, exactly ``{"data", "status_code"}``; returns the data.
    A log-in's answer serves both SDKs: v2's top-level ``token`` (the same token as v1's
    ``data.access_token``) and ``platforms`` stand beside the envelope, and nothing else."""
    assert response.status_code == 200, response.text
    body = response.json()
    if response.request.url.path.endswith("/auth/login"):
        assert set(body) == {"data", "status_code", "token", "platforms"}, body
        assert body["token"] == body["data"]["access_token"] and body["platforms"] == [], body
    else:
        assert set(body) == {"data", "status_code"}, body
    assert body["status_code"] == 200
    return body["data"]


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The response is the Neucron error body with this status and code, and a message; returns the body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "status_code"}, body
    assert body["error"] == error, body
    assert body["status_code"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body
