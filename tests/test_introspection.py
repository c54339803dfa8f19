"""Introspection (RFC 7662) answers only for the caller's own live tokens."""

from __future__ import annotations

import base64

import pytest

from support.neucron import Flow, new_flow


pytestmark = pytest.mark.db


def basic(app_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()}


async def test_a_disabled_apps_tokens_are_no_longer_active_for_anyone(flow: Flow) -> None:
    token = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    other = await new_flow(flow.client)
    own = await flow.client.post("/oauth2/introspect", data={"token": token}, headers=basic(flow.app_id, flow.key_secret))
    assert own.status_code == 200 and own.json()["active"] is True
    assert own.json()["client_id"] == flow.app_id and own.json()["sub"] == flow.user_id
    foreign = await flow.client.post(
        "/oauth2/introspect", data={"token": token}, headers=basic(other.app_id, other.key_secret)
    )
    assert foreign.json() == {"active": False}, "an app never sees another app's token"

    disabled = await flow.client.delete(f"/v1/apps/{flow.app_id}", headers={"Authorization": flow.dev_token})
    assert disabled.status_code == 200
    own = await flow.client.post("/oauth2/introspect", data={"token": token}, headers=basic(flow.app_id, flow.key_secret))
    assert own.status_code == 401 and own.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in own.headers
    foreign = await flow.client.post(
        "/oauth2/introspect", data={"token": token}, headers=basic(other.app_id, other.key_secret)
    )
    assert foreign.json() == {"active": False}


async def test_garbage_and_unknown_tokens_are_inactive_not_errors(flow: Flow) -> None:
    for token in ("not-a-token", "a.b.c", "x" * 4000, "gks_0000000000000000_nope"):
        response = await flow.client.post(
            "/oauth2/introspect", data={"token": token}, headers=basic(flow.app_id, flow.key_secret)
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"active": False}
        assert response.headers["cache-control"] == "no-store"


async def test_a_revoked_key_cannot_introspect_and_another_key_of_the_app_can(flow: Flow) -> None:
    """The caller's key is read with the token: a revoked key is refused before anything about the
    token is answered, and the app's other live key sees its tokens (those the revoked key issued
    ended with it)."""
    body = (await flow.redeem(await flow.code())).json()["data"]
    created = await flow.client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert created.status_code == 200, created.text
    spare = created.json()["data"]["key_secret"]
    revoked = await flow.client.delete(f"/v1/apps/{flow.app_id}/keys/{flow.key_id}", headers={"Authorization": flow.dev_token})
    assert revoked.status_code == 200, revoked.text
    for token in (body["access_token"], "not-a-token"):
        refused = await flow.client.post("/oauth2/introspect", data={"token": token}, headers=basic(flow.app_id, flow.key_secret))
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text
    ended = await flow.client.post("/oauth2/introspect", data={"token": body["access_token"]}, headers=basic(flow.app_id, spare))
    assert ended.status_code == 200 and ended.json() == {"active": False}, ended.text
    spare_id = created.json()["data"]["key_id"]
    issued = (await flow.redeem(await flow.code(), key_id=spare_id, key_secret=spare)).json()["data"]
    own = await flow.client.post("/oauth2/introspect", data={"token": issued["access_token"]}, headers=basic(flow.app_id, spare))
    assert own.status_code == 200 and own.json()["active"] is True and own.json()["client_id"] == flow.app_id
    # client_id beside a secret must name the secret's app
    mismatched = await flow.client.post(
        "/oauth2/introspect", data={"token": body["access_token"], "client_id": "someone-else", "client_secret": spare}
    )
    assert mismatched.status_code == 401 and mismatched.json()["error"] == "invalid_client"
