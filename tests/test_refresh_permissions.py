"""A refresh issues only what the app may still have (RFC 6749 §6 with the rule authorization
requests and client_credentials apply): a permission taken from the app (``PATCH /v1/apps``) or
from the catalog is dropped from the new tokens and from the grant for good; asking for it is
``invalid_scope``; a grant with nothing left is ``invalid_grant``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from acting_user import new_app
from grantd.config import Settings
from grantd.server import create_app
from support.neucron import Flow
from test_oauth2_security import (  # noqa: F401  (fixtures)
    ISSUER, REGISTERED, Person, assert_oauth_error, claims_of, code_by_pages, dev, introspect, person, regular, token,
    tokens_of,
)

pytestmark = pytest.mark.db


async def _granted(client: httpx.AsyncClient, dev: Flow, person: Person, scope: str) -> tuple[Flow, dict[str, Any]]:
    flow = await new_app(dev)  # permissions read_profile,write_data
    code, verifier = await code_by_pages(await person(), flow, scope=scope)
    body = tokens_of(
        await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=verifier)  # type: ignore[arg-type]
    )
    assert body["scope"] == scope
    return flow, body


async def _set_permissions(client: httpx.AsyncClient, flow: Flow, permissions: str) -> None:
    response = await client.patch(
        f"/v1/apps/{flow.app_id}", json={"permissions": permissions}, headers={"Authorization": flow.dev_token}
    )
    assert response.status_code == 200, response.text


async def _refresh(client: httpx.AsyncClient, flow: Flow, refresh_token: str, **form: str) -> httpx.Response:
    return await token(client, flow, grant_type="refresh_token", refresh_token=refresh_token, **form)


async def test_a_permission_taken_from_the_app_leaves_its_grants_at_the_next_refresh(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow, first = await _granted(client, dev, person, "read_profile write_data")
    await _set_permissions(client, flow, "read_profile")

    # Asking for the lost permission is refused, as an authorization request for it would be,
    # and leaves the refresh token unspent.
    body = assert_oauth_error(await _refresh(client, flow, first["refresh_token"], scope="write_data"), "invalid_scope")
    assert "write_data" in body["error_description"]
    second = tokens_of(await _refresh(client, flow, first["refresh_token"]))
    assert second["scope"] == "read_profile"
    assert claims_of(second["access_token"])["permissions"] == ["read_profile"]
    assert (await introspect(client, flow, second["refresh_token"]))["scope"] == "read_profile"

    # Given back to the app, the permission does not come back to the grant: the user would consent again.
    await _set_permissions(client, flow, "read_profile,write_data")
    third = tokens_of(await _refresh(client, flow, second["refresh_token"]))
    assert third["scope"] == "read_profile"
    assert claims_of(third["access_token"])["permissions"] == ["read_profile"]

    # Nothing of the grant left: invalid_grant, and the refresh token is left as it was.
    await _set_permissions(client, flow, "write_data")
    assert_oauth_error(await _refresh(client, flow, third["refresh_token"]), "invalid_grant", 400)
    assert (await introspect(client, flow, third["refresh_token"]))["active"] is True


@asynccontextmanager
async def app_with(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Another server of the same deployment (the session's database), with ``changes`` to its settings."""
    application = create_app(settings.model_copy(update=changes))
    async with application.router.lifespan_context(application):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER) as http:
            yield http


async def test_a_permission_dropped_from_the_catalog_leaves_every_grant(
    settings: Settings, client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow, first = await _granted(client, dev, person, "openid read_profile write_data")
    catalog = {name: text for name, text in settings.permissions.items() if name != "write_data"}
    async with app_with(settings, permissions=catalog) as restarted:
        assert_oauth_error(await _refresh(restarted, flow, first["refresh_token"], scope="write_data"), "invalid_scope")
        second = tokens_of(await _refresh(restarted, flow, first["refresh_token"]))
        assert second["scope"] == "openid read_profile"  # a standard scope is every app's
        assert claims_of(second["access_token"])["permissions"] == ["openid", "read_profile"]
        assert "id_token" in second
