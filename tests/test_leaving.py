"""Leaving, against a real `grantd serve` on SQLite and on PostgreSQL: the account's export (valid
against the published JSON Schema, without a secret) and its deletion from the account page (the
password and DELETE typed; afterwards every token the person had is inactive, the apps they owned
are disabled for everyone, and no row outside the audit log names their id or address)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import create_async_engine

from support.neucron import PASSWORD, Flow, sign_up, unique_email
from support.servers import TIMEOUT, ServerProcess
from test_pages import form, sign_in

pytestmark = pytest.mark.db

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "schemas" / "account-export.json").read_text())


def basic(app_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()}


async def new_app(client: httpx.AsyncClient, dev_token: str, name: str) -> dict[str, str]:
    body = {"name": name, "redirect_uris": ["https://app.example.com/callback"], "permissions": "read_profile,write_data"}
    created = await client.post("/v1/apps", json=body, headers={"Authorization": dev_token})
    assert created.status_code == 200, created.text
    app = created.json()["data"]
    key = await client.post(f"/v1/apps/{app['app_id']}/keys", headers={"Authorization": dev_token})
    assert key.status_code == 200, key.text
    return {"app_id": app["app_id"], "app_key": app["app_key"], **key.json()["data"]}


async def tokens_for(client: httpx.AsyncClient, user: tuple[str, str], app: dict[str, str]) -> dict[str, Any]:
    """The access and refresh tokens ``user`` (id, user token) gets at ``app`` through the code flow."""
    flow = Flow(
        client, user_token=user[1], user_id=user[0], app_id=app["app_id"], app_key=app["app_key"],
        key_id=app["key_id"], key_secret=app["key_secret"],
    )
    redeemed = await client.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": await flow.code(), "redirect_uri": flow.redirect_uri},
        headers=basic(app["app_id"], app["key_secret"]),
    )
    assert redeemed.status_code == 200, redeemed.text
    tokens = redeemed.json()
    assert tokens["access_token"] and tokens["refresh_token"], tokens
    return tokens


async def active(client: httpx.AsyncClient, token: str, app: dict[str, str]) -> httpx.Response:
    return await client.post("/oauth2/introspect", data={"token": token}, headers=basic(app["app_id"], app["key_secret"]))


async def rows_naming(database_url: str, needles: list[str]) -> dict[str, list[str]]:
    """Every row of every table of the database (as it is, reflected) that holds one of ``needles``."""
    engine = create_async_engine(database_url)
    found: dict[str, list[str]] = {}
    try:
        async with engine.connect() as conn:
            tables = MetaData()
            await conn.run_sync(tables.reflect)
            for table in tables.sorted_tables:
                for row in (await conn.execute(select(table))).all():
                    text = repr(tuple(row))
                    if any(needle in text for needle in needles):
                        found.setdefault(table.name, []).append(text)
    finally:
        await engine.dispose()
    return found


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess], any_database_url: str) -> ServerProcess:
    return server_factory(any_database_url)


async def test_export_then_delete_leaves_nothing_but_the_audit_log(server: ServerProcess, any_database_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as api,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as browser,
    ):
        email = unique_email()
        leaving = await sign_up(api, email)
        other = await sign_up(api)
        _, dev_token = await sign_up(api)
        own_app = await new_app(api, leaving[1], "Leaver's Photo Printer")
        others_app = await new_app(api, dev_token, "Someone else's app")
        mine_elsewhere = await tokens_for(api, leaving, others_app)
        mine_at_home = await tokens_for(api, leaving, own_app)
        others_at_mine = await tokens_for(api, other, own_app)
        assert (await active(api, mine_elsewhere["access_token"], others_app)).json()["active"] is True

        signed_in = await sign_in(browser, email, "/account")
        assert signed_in.status_code == 303, signed_in.text
        page = await browser.get("/account")
        assert page.status_code == 200
        assert "Leaver&#39;s Photo Printer" in page.text and own_app["app_id"] in page.text  # the warning names it

        # The export: a download, valid against the published schema, and never a secret.
        exported = await browser.get("/account/export")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-disposition"].startswith("attachment")
        assert exported.headers["cache-control"] == "no-store"
        data = exported.json()
        jsonschema.validate(data, SCHEMA, format_checker=jsonschema.FormatChecker())
        assert data["profile"]["id"] == leaving[0] and data["profile"]["email"] == email
        assert [a["app_id"] for a in data["apps"]] == [own_app["app_id"]]
        assert {c["app_id"] for c in data["consents"]} == {own_app["app_id"], others_app["app_id"]}
        assert {"signup", "consent_granted", "app_created"} <= {e["event"] for e in data["audit_events"]}
        raw = exported.text
        for secret in (PASSWORD, own_app["key_secret"], own_app["app_key"], mine_elsewhere["access_token"], leaving[1]):
            assert secret not in raw

        # The deletion refuses a wrong password, and a confirmation not typed; the account stays.
        delete_form = form(page, "/account/delete")
        wrong = await browser.post("/account/delete", data=delete_form.data(delete_password="not-the-password", confirmation="DELETE"))
        assert wrong.status_code == 400 and "The current password is wrong." in wrong.text
        untyped = await browser.post("/account/delete", data=delete_form.data(delete_password=PASSWORD, confirmation="delete me"))
        assert untyped.status_code == 400 and "Type DELETE to confirm." in untyped.text
        assert (await api.get("/v1/auth/user/info", headers={"Authorization": leaving[1]})).status_code == 200

        deleted = await browser.post("/account/delete", data=delete_form.data(delete_password=PASSWORD, confirmation="DELETE"))
        assert deleted.status_code == 200, deleted.text
        assert "Your account was deleted" in deleted.text
        assert "grantd_session=;" in deleted.headers["set-cookie"]

        # Every token the person had is inactive; the app they owned works for no one any more.
        for token in (mine_elsewhere["access_token"], mine_elsewhere["refresh_token"]):
            answer = await active(api, token, others_app)
            assert answer.status_code == 200 and answer.json() == {"active": False}, answer.text
        refreshed = await api.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": mine_elsewhere["refresh_token"]},
            headers=basic(others_app["app_id"], others_app["key_secret"]),
        )
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
        refused = await active(api, others_at_mine["access_token"], own_app)
        assert refused.status_code == 401, refused.text  # the app's key is revoked
        for token in (others_at_mine["access_token"], mine_at_home["access_token"]):
            userinfo = await api.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
            assert userinfo.status_code == 401, userinfo.text
        assert (await api.get("/v1/auth/user/info", headers={"Authorization": leaving[1]})).status_code == 401
        assert (await browser.get("/account")).status_code == 303  # signed out
        login = await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 401, login.text

    # No row names the person, but the audit log's, and those only by id.
    found = await rows_naming(any_database_url, [leaving[0], email])
    assert set(found) == {"audit_events"}, found
    assert not any(email in row for row in found["audit_events"])
    assert any("'account_deleted'" in row for row in found["audit_events"])
    app_rows = await rows_naming(any_database_url, [own_app["app_id"]])
    (app_row,) = [row for row in app_rows["apps"]]
    assert "'deleted-account'" in app_row


async def test_the_export_api_needs_a_fresh_user_token_and_validates(client: httpx.AsyncClient) -> None:
    """``GET /v1/auth/user/export``: the same document for a user token signed in within 5 minutes;
    an app's access token, or none, is refused."""
    email = unique_email()
    user_id, user_token = await sign_up(client, email)
    for prefix in ("/v1", ""):
        answer = await client.get(f"{prefix}/auth/user/export", headers={"Authorization": f"Bearer {user_token}"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        data = answer.json()
        jsonschema.validate(data, SCHEMA, format_checker=jsonschema.FormatChecker())
        assert data["profile"]["id"] == user_id and data["profile"]["email"] == email
        assert [event["event"] for event in data["audit_events"]][-1] == "signup"
    refused = await client.get("/v1/auth/user/export")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token", refused.text
    _, dev_token = await sign_up(client)
    app = await new_app(client, dev_token, "Curious app")
    tokens = await tokens_for(client, (user_id, user_token), app)
    as_app = await client.get("/v1/auth/user/export", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert as_app.status_code == 401 and as_app.json()["error"] == "invalid_token", as_app.text


async def test_an_old_session_must_sign_in_again_to_export(app: Any, client: httpx.AsyncClient) -> None:
    from grantd.core import leaving
    from grantd.core.accounts import Principal
    from grantd.core.errors import InsufficientUserAuthentication

    ctx = app.state.ctx
    user_id, _ = await sign_up(client)
    old = Principal(user_id=user_id, jti="unused", issued_at=ctx.now() - 3600)
    with pytest.raises(InsufficientUserAuthentication):
        await leaving.export_signed_in_now(ctx, old)
    fresh = Principal(user_id=user_id, jti="unused", issued_at=ctx.now())
    assert (await leaving.export_signed_in_now(ctx, fresh))["profile"]["id"] == user_id
