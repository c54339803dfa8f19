"""Revoking an app's key ends what the key issued, at once: its access tokens are inactive at
introspection and refused by grantd's own resources, its refresh tokens refuse; tokens the app got
with another key live on. Disabling the app ends all of them. Judged when a token is read (its
key's and app's state looked up with it), so nothing the key issued escapes, however late."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from acting_user import new_app
from support.neucron import Flow
from test_oauth2_security import (  # noqa: F401  (fixtures)
    REGISTERED, Person, assert_oauth_error, code_by_pages, dev, introspect, person, regular, token, tokens_of,
)

pytestmark = pytest.mark.db


async def _second_key(client: httpx.AsyncClient, flow: Flow) -> Flow:
    response = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return dataclasses.replace(flow, key_id=data["key_id"], key_secret=data["key_secret"])


async def _redeemed(client: httpx.AsyncClient, flow: Flow, person: Person) -> dict[str, str]:
    code, verifier = await code_by_pages(await person(), flow)
    return tokens_of(
        await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=verifier)  # type: ignore[arg-type]
    )


async def _user_info(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get("/v1/auth/user/info", headers={"Authorization": f"Bearer {access_token}"})).status_code


async def test_revoking_a_key_ends_the_tokens_it_issued_and_only_those(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    old = await new_app(dev)
    new = await _second_key(client, old)
    by_old = await _redeemed(client, old, person)
    own = tokens_of(await token(client, old, grant_type="client_credentials"))
    by_new = await _redeemed(client, new, person)
    # A grant issued with the old key and refreshed with the new one moved to the new key.
    moved = tokens_of(
        await token(client, new, grant_type="refresh_token", refresh_token=(await _redeemed(client, old, person))["refresh_token"])
    )
    for value in (by_old["access_token"], by_old["refresh_token"], own["access_token"], by_new["access_token"]):
        assert (await introspect(client, new, value))["active"] is True
    assert await _user_info(client, by_old["access_token"]) == 200

    response = await client.delete(f"/v1/apps/{old.app_id}/keys/{old.key_id}", headers={"Authorization": old.dev_token})
    assert response.status_code == 200, response.text

    for value in (by_old["access_token"], by_old["refresh_token"], own["access_token"]):
        assert await introspect(client, new, value) == {"active": False}
    assert await _user_info(client, by_old["access_token"]) == 401
    assert_oauth_error(
        await token(client, new, grant_type="refresh_token", refresh_token=by_old["refresh_token"]), "invalid_grant", 400
    )
    # What the other key issued is untouched.
    for value in (by_new["access_token"], by_new["refresh_token"], moved["access_token"], moved["refresh_token"]):
        assert (await introspect(client, new, value))["active"] is True
    assert await _user_info(client, by_new["access_token"]) == 200
    tokens_of(await token(client, new, grant_type="refresh_token", refresh_token=moved["refresh_token"]))


async def test_disabling_the_app_ends_every_token_it_holds(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    flow = await new_app(dev)
    issued = await _redeemed(client, flow, person)
    assert await _user_info(client, issued["access_token"]) == 200
    response = await client.delete(f"/v1/apps/{flow.app_id}", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    assert await _user_info(client, issued["access_token"]) == 401
    assert_oauth_error(
        await token(client, flow, grant_type="refresh_token", refresh_token=issued["refresh_token"]), "invalid_client", 401
    )


async def test_a_refresh_token_kept_without_rotation_ends_with_its_key(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    """An app that does not rotate (``refresh_token_rotation`` false) keeps one refresh token for
    the grant's life: revoking the key it was issued with ends it all the same."""
    old = await new_app(dev)
    response = await client.patch(
        f"/v1/apps/{old.app_id}", json={"refresh_token_rotation": False}, headers={"Authorization": old.dev_token}
    )
    assert response.status_code == 200, response.text
    new = await _second_key(client, old)
    kept = await _redeemed(client, old, person)
    again = tokens_of(await token(client, new, grant_type="refresh_token", refresh_token=kept["refresh_token"]))
    assert again["refresh_token"] == kept["refresh_token"]  # kept, not rotated

    response = await client.delete(f"/v1/apps/{old.app_id}/keys/{old.key_id}", headers={"Authorization": old.dev_token})
    assert response.status_code == 200, response.text

    assert await introspect(client, new, kept["refresh_token"]) == {"active": False}
    assert_oauth_error(
        await token(client, new, grant_type="refresh_token", refresh_token=kept["refresh_token"]), "invalid_grant", 400
    )
    by_new = await _redeemed(client, new, person)  # the new key's grants are untouched
    tokens_of(await token(client, new, grant_type="refresh_token", refresh_token=by_new["refresh_token"]))
