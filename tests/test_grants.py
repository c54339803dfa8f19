"""A user's grants: listed with what each app may do, and ended with every token they produced."""

from __future__ import annotations

import base64

import httpx
import pytest

from support.neucron import Flow


pytestmark = pytest.mark.db


async def introspect(flow: Flow, token: str) -> dict:
    basic = base64.b64encode(f"{flow.app_id}:{flow.key_secret}".encode()).decode()
    response = await flow.client.post(
        "/oauth2/introspect", data={"token": token}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def grants_of(client: httpx.AsyncClient, user_token: str) -> list[dict]:
    response = await client.get("/v1/grants", headers={"Authorization": user_token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "status_code"}
    return body["data"]["grants"]


async def test_grants_list_what_each_app_may_do_and_when_it_was_last_used(flow: Flow) -> None:
    assert await grants_of(flow.client, flow.user_token) == []
    await flow.code(permissions="read_profile")
    [grant] = await grants_of(flow.client, flow.user_token)
    assert grant["app_id"] == flow.app_id and grant["app_name"] == "Test App"
    assert grant["permissions"] == "read_profile"
    assert grant["granted_at"].endswith("Z") and grant["last_used_at"] is None

    assert (await flow.grant(permissions="write_data")).status_code == 200
    token = (await flow.redeem(await flow.code(permissions="read_profile,write_data"))).json()["data"]["access_token"]
    [grant] = await grants_of(flow.client, flow.user_token)
    assert grant["permissions"] == "read_profile,write_data"
    assert grant["last_used_at"] is not None
    assert (await introspect(flow, token))["active"] is True

    # The developer who owns the app has granted nothing themselves.
    assert await grants_of(flow.client, flow.dev_token) == []


async def test_revoking_a_grant_ends_every_token_and_code_and_asks_consent_again(flow: Flow) -> None:
    first = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    second = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    outstanding = await flow.code()

    response = await flow.client.delete(f"/v1/grants/{flow.app_id}", headers={"Authorization": flow.user_token})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["app_id"] == flow.app_id

    assert (await introspect(flow, first)) == {"active": False}
    assert (await introspect(flow, second)) == {"active": False}
    refused = await flow.redeem(outstanding)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_grant"
    assert await grants_of(flow.client, flow.user_token) == []

    # Consent starts over: the next authorize records a new grant and its token is live.
    fresh = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    assert (await introspect(flow, fresh))["active"] is True


async def test_a_grant_is_only_its_users_to_revoke(flow: Flow) -> None:
    token = (await flow.redeem(await flow.code())).json()["data"]["access_token"]
    response = await flow.client.delete(f"/v1/grants/{flow.app_id}", headers={"Authorization": flow.dev_token})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert (await introspect(flow, token))["active"] is True
    response = await flow.client.delete("/v1/grants/no-such-app", headers={"Authorization": flow.user_token})
    assert response.status_code == 404
    response = await flow.client.get("/grants")
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
