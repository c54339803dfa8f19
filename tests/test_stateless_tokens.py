"""Access tokens without a row: issued by one `grantd serve` process, judged by another on the
same database (SQLite and PostgreSQL), as a deployment of several processes judges them.

Every token acknowledged verifies and introspects active until something ends it; then every
process's next introspection says ``{"active": false}`` and grantd's own resource refuses it:
an explicit revocation (RFC 7009), a replayed code or refresh token, a log-out, a withdrawn
consent, a locked or deleted account, a revoked key, a disabled app, and an app enabled again
(whose old tokens never come back). client_credentials writes no row.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from acting_user import ActingUser
from grantd.api.wire import rfc3339
from grantd.store.db import Database
from grantd.store.schema import metadata
from support.neucron import PASSWORD, Flow, new_flow, ok, sign_up, unique_email
from support.servers import TIMEOUT, ServerProcess, assert_clean_logs, verify_on_every_server
from test_cli import Cli

pytestmark = pytest.mark.db


@dataclass
class Pair:
    """Two server processes of one deployment, a client of each, and the command line on their database."""

    servers: list[ServerProcess]
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    cli: Cli
    database_url: str

    async def admin(self) -> str:
        """A user token of a new account the operator made an admin (signed up through A)."""
        email = unique_email()
        await sign_up(self.a, email)
        assert self.cli.json("users", "grant-admin", email)["is_admin"] is True
        response = await self.a.post("/v1/auth/login", json={"email": email, "password": "correct horse battery"})
        return ok(response)["access_token"]  # type: ignore[no-any-return]


@pytest.fixture
async def pair(
    any_database_url: str, deployment: Callable[..., list[ServerProcess]], tmp_path: Path, secret_key: str
) -> AsyncIterator[Pair]:
    servers = deployment(any_database_url, env={"GRANTD_REFRESH_TOKEN_GRACE": "0"})
    cli = Cli(tmp_path, secret_key)
    cli.database_url = cli.env["GRANTD_DATABASE_URL"] = any_database_url
    async with (
        httpx.AsyncClient(base_url=servers[0].base_url, timeout=TIMEOUT) as a,
        httpx.AsyncClient(base_url=servers[1].base_url, timeout=TIMEOUT) as b,
    ):
        yield Pair(servers, a, b, cli, any_database_url)
    assert_clean_logs(servers)


def _basic(flow: Flow) -> tuple[str, str]:
    return (flow.app_id, flow.key_secret)


async def _token(client: httpx.AsyncClient, flow: Flow, **form: str) -> dict[str, Any]:
    response = await client.post("/oauth2/token", data=form, auth=_basic(flow))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _redeemed(client: httpx.AsyncClient, flow: Flow, **code_params: str) -> dict[str, Any]:
    """A code of ``flow``'s user, redeemed at /oauth2/token through ``client``: access and refresh token."""
    code = await flow.code(**code_params)
    return await _token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)


async def _introspect(client: httpx.AsyncClient, flow: Flow, token: str) -> dict[str, Any]:
    response = await client.post("/oauth2/introspect", data={"token": token}, auth=_basic(flow))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _user_info(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/v1/auth/user/info", headers={"Authorization": f"Bearer {token}"})).status_code


async def _revoke(client: httpx.AsyncClient, flow: Flow, token: str) -> None:
    response = await client.post("/oauth2/revoke", data={"token": token}, auth=_basic(flow))
    assert response.status_code == 200, response.text


async def _active_everywhere(pair: Pair, flow: Flow, token: str) -> None:
    for client in (pair.a, pair.b):
        assert (await _introspect(client, flow, token))["active"] is True


async def _inactive_everywhere(pair: Pair, flow: Flow, token: str, *, user_token: bool = True) -> None:
    for client in (pair.a, pair.b):
        assert await _introspect(client, flow, token) == {"active": False}
        if user_token:
            assert await _user_info(client, token) == 401


async def _row_counts(database_url: str) -> dict[str, int]:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            return {
                table.name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
                for table in metadata.sorted_tables
            }
    finally:
        await db.dispose()


async def test_client_credentials_writes_nothing_and_every_process_honours_its_tokens(pair: Pair) -> None:
    flow = await new_flow(pair.a)
    before = await _row_counts(pair.database_url)
    issued = [await _token(client, flow, grant_type="client_credentials") for client in (pair.a, pair.b) * 5]
    assert await _row_counts(pair.database_url) == before  # no table grew: no access token row, no audit row
    for body in issued:
        claims = await verify_on_every_server(body["access_token"], pair.servers, pair.servers[0].base_url)
        assert claims["client_id"] == flow.app_id and claims["key_id"] == flow.key_id and "family" not in claims
        await _active_everywhere(pair, flow, body["access_token"])

    # The key's last use: kept in memory by the process that issued (shown by it at once), flushed
    # to the database when it shuts down (or every 30 s), then shown by every process.
    only_a = await new_flow(pair.a)
    used = await _token(pair.a, only_a, grant_type="client_credentials")
    iat = jwt.decode(used["access_token"], options={"verify_signature": False})["iat"]
    assert await _last_used(pair.a, only_a) == rfc3339(iat)
    assert await _last_used(pair.b, only_a) is None  # B has not seen it yet: at most one flush interval behind
    pair.servers[0].stop()
    assert await _last_used(pair.b, only_a) == rfc3339(iat)


async def _last_used(client: httpx.AsyncClient, flow: Flow) -> str | None:
    listed = ok(await client.get(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token}))
    (key,) = [k for k in listed["keys"] if k["key_id"] == flow.key_id]
    return key["last_used_at"]  # type: ignore[no-any-return]


async def test_a_token_revoked_through_one_process_is_inactive_on_the_other(pair: Pair) -> None:
    flow = await new_flow(pair.a)
    other = await new_flow(pair.a)
    first = await _redeemed(pair.a, flow)
    refreshed = await _token(pair.a, flow, grant_type="refresh_token", refresh_token=first["refresh_token"])
    own = await _token(pair.a, flow, grant_type="client_credentials")
    for token in (first["access_token"], refreshed["access_token"], own["access_token"]):
        await _active_everywhere(pair, flow, token)
    assert await _user_info(pair.b, first["access_token"]) == 200

    # Another app's revocation of the token is ignored (RFC 7009 §2.2): it stays active.
    await _revoke(pair.b, other, first["access_token"])
    await _active_everywhere(pair, flow, first["access_token"])

    await _revoke(pair.a, flow, first["access_token"])
    await _revoke(pair.b, flow, own["access_token"])
    await _inactive_everywhere(pair, flow, first["access_token"])
    await _inactive_everywhere(pair, flow, own["access_token"], user_token=False)
    # Only those: the access token of the same family refreshed beside it lives on.
    await _active_everywhere(pair, flow, refreshed["access_token"])
    assert await _user_info(pair.b, refreshed["access_token"]) == 200


async def test_a_replayed_code_or_refresh_token_ends_its_family_everywhere(pair: Pair) -> None:
    flow = await new_flow(pair.a)
    code = await flow.code()
    first = await _token(pair.a, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)
    untouched = await _redeemed(pair.a, flow)
    await _active_everywhere(pair, flow, first["access_token"])
    replayed = await pair.b.post(
        "/oauth2/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri},
        auth=_basic(flow),
    )
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant", replayed.text
    await _inactive_everywhere(pair, flow, first["access_token"])
    await _active_everywhere(pair, flow, untouched["access_token"])

    # A rotated refresh token used again (no grace window here): every access token of its family ends.
    second = await _token(pair.a, flow, grant_type="refresh_token", refresh_token=untouched["refresh_token"])
    third = await _token(pair.b, flow, grant_type="refresh_token", refresh_token=second["refresh_token"])
    for token in (untouched["access_token"], second["access_token"], third["access_token"]):
        await _active_everywhere(pair, flow, token)
    reused = await pair.a.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": untouched["refresh_token"]}, auth=_basic(flow)
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", reused.text
    for token in (untouched["access_token"], second["access_token"], third["access_token"], third["refresh_token"]):
        await _inactive_everywhere(pair, flow, token, user_token=token != third["refresh_token"])


async def test_withdrawing_consent_ends_the_tokens_everywhere(pair: Pair) -> None:
    flow = await new_flow(pair.a)
    standard = await _redeemed(pair.a, flow)
    neucron = ok(await flow.redeem(await flow.code()))  # a Neucron redemption: an access token alone
    others = await new_flow(pair.a)  # another app of another user: untouched
    elsewhere = await _redeemed(pair.a, others)
    for token in (standard["access_token"], neucron["access_token"]):
        await _active_everywhere(pair, flow, token)
    response = await pair.b.delete(f"/v1/grants/{flow.app_id}", headers={"Authorization": f"Bearer {flow.user_token}"})
    assert response.status_code == 200, response.text
    for token in (standard["access_token"], neucron["access_token"], standard["refresh_token"]):
        await _inactive_everywhere(pair, flow, token, user_token=token != standard["refresh_token"])
    await _active_everywhere(pair, others, elsewhere["access_token"])


async def _openid_grant(pair: Pair, browser: httpx.AsyncClient, flow: Flow, email: str, scope: str) -> dict[str, Any]:
    """Signed in and allowed on server A's pages in ``browser``, the code redeemed at A."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code", "client_id": flow.app_id, "redirect_uri": flow.redirect_uri, "scope": scope,
        "state": "st", "nonce": secrets.token_urlsafe(8), "code_challenge": challenge, "code_challenge_method": "S256",
    }
    url = f"{pair.servers[0].base_url}/oauth2/authorize?{urlencode(query)}"
    location = await ActingUser(browser, email, PASSWORD).authorize(url, flow.redirect_uri)
    code = parse_qs(urlsplit(location).query)["code"][0]
    return await _token(
        pair.a, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri, code_verifier=verifier
    )


async def test_logging_out_ends_the_sessions_grants_everywhere(pair: Pair) -> None:
    """An OpenID grant without offline_access ends with the browser session that approved it
    (OpenID Connect Core §11): its access tokens too, on every process."""
    flow = await new_flow(pair.a)
    email = unique_email()
    await sign_up(pair.a, email)
    async with httpx.AsyncClient(base_url=pair.servers[0].base_url, timeout=TIMEOUT) as browser:
        online = await _openid_grant(pair, browser, flow, email, "openid read_profile")
        offline = await _openid_grant(pair, browser, flow, email, "openid offline_access read_profile")
        for token in (online["access_token"], offline["access_token"]):
            await _active_everywhere(pair, flow, token)
        response = await browser.get("/oauth2/logout", params={"id_token_hint": online["id_token"]})
        assert response.status_code == 200 and "You are signed out" in response.text, response.text
    await _inactive_everywhere(pair, flow, online["access_token"])
    await _active_everywhere(pair, flow, offline["access_token"])  # offline_access outlives the session


async def test_locking_or_deleting_the_account_ends_its_tokens_everywhere(pair: Pair) -> None:
    admin = {"Authorization": f"Bearer {await pair.admin()}"}
    locked, deleted = await new_flow(pair.a), await new_flow(pair.a)
    tokens = {flow.user_id: [await _redeemed(pair.a, flow), ok(await flow.redeem(await flow.code()))] for flow in (locked, deleted)}
    for flow in (locked, deleted):
        for body in tokens[flow.user_id]:
            await _active_everywhere(pair, flow, body["access_token"])

    response = await pair.a.post(f"/v1/admin/users/{locked.user_id}/lock", headers=admin)
    assert response.status_code == 200, response.text
    response = await pair.a.delete(f"/v1/admin/users/{deleted.user_id}", headers=admin)
    assert response.status_code == 200, response.text
    for flow in (locked, deleted):
        for body in tokens[flow.user_id]:
            await _inactive_everywhere(pair, flow, body["access_token"])
    # Unlocked again, the account's old tokens stay ended.
    response = await pair.b.post(f"/v1/admin/users/{locked.user_id}/unlock", headers=admin)
    assert response.status_code == 200, response.text
    for body in tokens[locked.user_id]:
        await _inactive_everywhere(pair, locked, body["access_token"])


async def test_a_revoked_key_a_disabled_app_and_an_app_enabled_again(pair: Pair) -> None:
    admin = {"Authorization": f"Bearer {await pair.admin()}"}
    flow = await new_flow(pair.a)
    response = await pair.a.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    key = response.json()["data"]
    spare = dataclasses.replace(flow, key_id=key["key_id"], key_secret=key["key_secret"])
    by_old = await _redeemed(pair.a, flow)
    own_old = await _token(pair.a, flow, grant_type="client_credentials")
    by_spare = await _redeemed(pair.a, spare)
    response = await pair.a.delete(f"/v1/apps/{flow.app_id}/keys/{flow.key_id}", headers={"Authorization": flow.dev_token})
    assert response.status_code == 200, response.text
    await _inactive_everywhere(pair, spare, by_old["access_token"])
    await _inactive_everywhere(pair, spare, own_old["access_token"], user_token=False)
    await _active_everywhere(pair, spare, by_spare["access_token"])

    # Disabled by an admin: the app's tokens are refused by grantd's own resource (and its key no
    # longer authenticates it).
    response = await pair.a.post(f"/v1/admin/apps/{flow.app_id}/disable", headers=admin)
    assert response.status_code == 200, response.text
    for client in (pair.a, pair.b):
        assert await _user_info(client, by_spare["access_token"]) == 401
    # Enabled again: none of its old tokens comes back, on either process; a token issued after
    # the second of the enabling is active.
    response = await pair.b.post(f"/v1/admin/apps/{flow.app_id}/enable", headers=admin)
    assert response.status_code == 200, response.text
    await _inactive_everywhere(pair, spare, by_spare["access_token"])
    await asyncio.sleep(max(0.0, 1.05 - (time.time() % 1)))  # the next whole second
    fresh = await _redeemed(pair.b, spare)
    await _active_everywhere(pair, spare, fresh["access_token"])
    assert await _user_info(pair.a, fresh["access_token"]) == 200


async def test_an_app_enabled_again_voids_the_tokens_of_that_very_second(app: Any, client: httpx.AsyncClient) -> None:
    """``iat`` is whole seconds: a token issued in the second the app was enabled again cannot be
    told from one issued before it, so it is void too (fail closed); one a second later is active."""
    from grantd.core import admin
    from grantd.core.audit import OPERATOR

    ctx = app.state.ctx
    flow = await new_flow(client)
    at = ctx.now() + 5
    ctx.now = lambda: at  # type: ignore[method-assign]
    try:
        await admin.disable_app(ctx, OPERATOR, flow.app_id)
        await admin.enable_app(ctx, OPERATOR, flow.app_id)
        same_second = await _token(client, flow, grant_type="client_credentials")
        assert await _introspect(client, flow, same_second["access_token"]) == {"active": False}
        ctx.now = lambda: at + 1  # type: ignore[method-assign]
        next_second = await _token(client, flow, grant_type="client_credentials")
        assert (await _introspect(client, flow, next_second["access_token"]))["active"] is True
        assert await _introspect(client, flow, same_second["access_token"]) == {"active": False}
    finally:
        del ctx.now
