"""An app's ``refresh_token_rotation`` setting against a real `grantd serve` on the session's
database (SQLite, or PostgreSQL with GRANTD_TEST_DB=postgres): on (the default), a refresh answers a
new refresh token and retires the one presented; off, it answers a new access token and the same
refresh token, whose lifetime does not change. Reuse detection stays as it was for a token rotated
while the app rotated; a public client's tokens always rotate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.neucron import Flow, new_flow
from support.servers import ServerProcess, start_server
from test_oauth2_security import (  # noqa: F401  (dev, regular and person are fixtures)
    REGISTERED,
    assert_oauth_error,
    claims_of,
    code_by_pages,
    dev,
    introspect,
    person,
    regular,
    token,
    tokens_of,
)

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def server(database_url: str, secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server on the session's database, with no refresh grace window: a reuse is a reuse."""
    process = start_server(
        database_url, secret_key, Path(tmp_path_factory.mktemp("rotation")), env={"GRANTD_REFRESH_TOKEN_GRACE": "0"}
    )
    yield process
    process.stop()


@pytest.fixture
async def http(server: ServerProcess) -> Any:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


async def first_tokens(http: httpx.AsyncClient, flow: Flow) -> dict[str, Any]:
    code = await flow.code()
    return tokens_of(await token(http, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED))


async def refresh(http: httpx.AsyncClient, flow: Flow, refresh_token: str) -> httpx.Response:
    return await token(http, flow, grant_type="refresh_token", refresh_token=refresh_token)


async def set_rotation(http: httpx.AsyncClient, flow: Flow, value: bool) -> None:
    response = await http.patch(
        f"/v1/apps/{flow.app_id}", json={"refresh_token_rotation": value}, headers={"Authorization": flow.dev_token}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["refresh_token_rotation"] is value


async def test_rotation_is_on_by_default(http: httpx.AsyncClient) -> None:
    flow = await new_flow(http)
    app = (await http.get(f"/v1/apps/{flow.app_id}", headers={"Authorization": flow.dev_token})).json()["data"]
    assert app["refresh_token_rotation"] is True
    first = await first_tokens(http, flow)
    second = tokens_of(await refresh(http, flow, first["refresh_token"]))
    third = tokens_of(await refresh(http, flow, second["refresh_token"]))
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    # The retired one presented again (no grace on this server) revokes the family.
    assert_oauth_error(await refresh(http, flow, first["refresh_token"]), "invalid_grant")
    assert await introspect(http, flow, third["refresh_token"]) == {"active": False}


async def test_without_rotation_the_same_refresh_token_comes_back(http: httpx.AsyncClient) -> None:
    flow = await new_flow(http, refresh_token_rotation=False)
    first = await first_tokens(http, flow)
    before = await introspect(http, flow, first["refresh_token"])
    assert before["active"] is True
    jtis = {claims_of(first["access_token"])["jti"]}
    for _ in range(3):
        body = tokens_of(await refresh(http, flow, first["refresh_token"]))
        assert body["refresh_token"] == first["refresh_token"]
        assert body["scope"] == first["scope"]
        jtis.add(claims_of(body["access_token"])["jti"])
        assert (await introspect(http, flow, body["access_token"]))["active"] is True
    assert len(jtis) == 4  # a new access token each time
    # Its lifetime is the one it was issued with.
    assert (await introspect(http, flow, first["refresh_token"]))["exp"] == before["exp"]
    # Revoked (RFC 7009), it takes its family with it and refreshes no more.
    revoked = await http.post(
        "/oauth2/revoke", data={"token": first["refresh_token"], "client_id": flow.app_id, "client_secret": flow.key_secret}
    )
    assert revoked.status_code == 200
    assert_oauth_error(await refresh(http, flow, first["refresh_token"]), "invalid_grant")
    assert await introspect(http, flow, body["access_token"]) == {"active": False}


async def test_a_narrower_scope_is_for_that_access_token_only(http: httpx.AsyncClient) -> None:
    flow = await new_flow(http, refresh_token_rotation=False)
    code = await flow.code(permissions="read_profile,write_data")
    first = tokens_of(await token(http, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED))
    narrow = tokens_of(await token(http, flow, grant_type="refresh_token", refresh_token=first["refresh_token"], scope="read_profile"))
    assert narrow["scope"] == "read_profile" and narrow["refresh_token"] == first["refresh_token"]
    whole = tokens_of(await refresh(http, flow, first["refresh_token"]))
    assert set(whole["scope"].split()) == {"read_profile", "write_data"}


async def test_turning_rotation_off_keeps_reuse_detection_for_a_token_rotated_before(http: httpx.AsyncClient) -> None:
    flow = await new_flow(http)
    first = await first_tokens(http, flow)
    second = tokens_of(await refresh(http, flow, first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    await set_rotation(http, flow, False)
    kept = tokens_of(await refresh(http, flow, second["refresh_token"]))
    assert kept["refresh_token"] == second["refresh_token"]
    # The token retired while the app rotated is still a reuse: the family goes.
    assert_oauth_error(await refresh(http, flow, first["refresh_token"]), "invalid_grant")
    assert_oauth_error(await refresh(http, flow, second["refresh_token"]), "invalid_grant")
    assert await introspect(http, flow, kept["access_token"]) == {"active": False}


async def test_turning_rotation_back_on_rotates_the_kept_token(http: httpx.AsyncClient) -> None:
    flow = await new_flow(http, refresh_token_rotation=False)
    first = await first_tokens(http, flow)
    assert tokens_of(await refresh(http, flow, first["refresh_token"]))["refresh_token"] == first["refresh_token"]
    await set_rotation(http, flow, True)
    rotated = tokens_of(await refresh(http, flow, first["refresh_token"]))
    assert rotated["refresh_token"] != first["refresh_token"]
    assert (await introspect(http, flow, rotated["refresh_token"]))["active"] is True


async def test_another_apps_refresh_token_is_refused(http: httpx.AsyncClient) -> None:
    flow = await new_flow(http, refresh_token_rotation=False)
    other = await new_flow(http, refresh_token_rotation=False)
    first = await first_tokens(http, flow)
    assert_oauth_error(await refresh(http, other, first["refresh_token"]), "invalid_grant")
    assert tokens_of(await refresh(http, flow, first["refresh_token"]))["refresh_token"] == first["refresh_token"]


async def test_a_public_client_keeps_rotating(client: httpx.AsyncClient, dev: Flow, person: Any) -> None:
    """In process (the pages with PKCE): a public client's refresh tokens rotate (RFC 9700 §4.14.2:
    grantd does not bind them to the client), so the setting cannot be turned off for one."""
    from acting_user import new_app

    for path, method in (("/v1/apps", "post"), (None, "patch")):
        flow = await new_app(dev, client_type="public")
        body: dict[str, Any] = {"refresh_token_rotation": False}
        if method == "post":
            body |= {"name": "SPA", "redirect_uris": [REGISTERED], "permissions": "read_profile", "client_type": "public"}
        response = await client.request(
            method.upper(), path or f"/v1/apps/{flow.app_id}", json=body, headers={"Authorization": dev.dev_token}
        )
        assert response.status_code == 400, response.text
        assert "refresh_token_rotation can be false only for a confidential client" in response.json()["message"]
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    first = tokens_of(
        await token(client, flow, "public", grant_type="authorization_code", code=code, redirect_uri=REGISTERED,
                    code_verifier=verifier)  # type: ignore[arg-type]
    )
    again = tokens_of(await token(client, flow, "public", grant_type="refresh_token", refresh_token=first["refresh_token"]))
    assert again["refresh_token"] != first["refresh_token"]
