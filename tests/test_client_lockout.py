"""Nobody can lock a client out of the token endpoints: failures are budgeted per client address
(and per client named from that address), never per client alone, so junk requests naming a
client's id from one address leave its correct requests from any other address served. The
client's ids are no secret (a public client's id is public; a key id used to show in each end
user's own audit view, which no longer shows it). Real `grantd serve` processes, real sockets,
requests from distinct loopback addresses (127.0.0.2, … route to the server on Linux; the server
trusts no proxy header)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from acting_user import ActingUser, developer, new_app
from support.neucron import PASSWORD, Flow
from support.servers import TIMEOUT, ServerProcess
from test_oauth2_security import authorize_url, new_pkce, query_of

pytestmark = pytest.mark.db

# The shipped defaults (the test servers otherwise run unthrottled).
LIMITS = {"GRANTD_RATE_LIMIT_TOKEN_FAILURES_PER_CLIENT": "100", "GRANTD_RATE_LIMIT_TOKEN_FAILURES_PER_ADDRESS": "100"}
JUNK = 150


def from_address(server: ServerProcess, address: str) -> httpx.AsyncClient:
    """A client whose connections leave from ``address`` (a loopback address of its own)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=server.base_url, transport=transport, timeout=TIMEOUT)


async def junk(server: ServerProcess, address: str, send: Callable[[httpx.AsyncClient], Any]) -> Counter[int]:
    """JUNK failing requests from ``address``; their statuses, the last ones refused by the limit."""
    statuses: Counter[int] = Counter()
    async with from_address(server, address) as attacker:
        for _ in range(JUNK):
            statuses[(await send(attacker)).status_code] += 1
    assert set(statuses) <= {400, 401, 429}, statuses
    assert statuses[429] >= JUNK - 100, statuses  # the address did use up its budget
    return statuses


async def test_junk_naming_a_public_client_does_not_lock_it_out(
    database_url: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(database_url, env=LIMITS)
    async with from_address(server, "127.0.0.3") as http:
        app = await new_app(await developer(http), client_type="public")
        verifier, challenge = new_pkce()
        url = authorize_url(app, code_challenge=challenge, code_challenge_method="S256")
        callback = await ActingUser(http, app.extra["email"], PASSWORD).authorize(url, app.redirect_uri)
        code = query_of(callback)["code"][0]

        def guess(attacker: httpx.AsyncClient) -> Any:
            form = {"grant_type": "authorization_code", "client_id": app.app_id, "code": secrets.token_urlsafe(32)}
            return attacker.post("/oauth2/token", data=form)

        await junk(server, "127.0.0.2", guess)
        form = {
            "grant_type": "authorization_code", "client_id": app.app_id, "code": code, "code_verifier": verifier,
            "redirect_uri": app.redirect_uri,
        }
        response = await http.post("/oauth2/token", data=form)
        assert response.status_code == 200, response.text
        assert response.json()["access_token"]


async def test_junk_naming_a_confidential_key_does_not_lock_it_out_and_users_do_not_see_key_ids(
    database_url: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(database_url, env=LIMITS)
    async with from_address(server, "127.0.0.5") as http:
        app = await new_app(await developer(http))
        redeemed = await app.redeem(await app.code())
        assert redeemed.status_code == 200, redeemed.text

        # The end user's own audit view shows the redemption, not the app's key; the developer's shows it.
        def audit(token: str) -> Any:
            return http.get("/v1/audit", headers={"Authorization": f"Bearer {token}"})

        seen_by_user = (await audit(app.user_token)).json()["data"]["events"]
        redemptions = [event for event in seen_by_user if event["event"] == "code_redeemed" and event["app_id"] == app.app_id]
        assert redemptions and all("key_id" not in event["detail"] for event in redemptions), redemptions
        assert app.key_id not in str(seen_by_user)
        seen_by_developer = (await audit(app.dev_token)).json()["data"]["events"]
        assert any(
            event["event"] == "code_redeemed" and event["detail"].get("key_id") == app.key_id for event in seen_by_developer
        ), seen_by_developer

        def guess(attacker: httpx.AsyncClient) -> Any:
            body = {"auth_code": secrets.token_urlsafe(32), "key_id": app.key_id, "key_secret": "gks_" + secrets.token_urlsafe(32)}
            return attacker.post("/oauth/token", json={"token": body})

        await junk(server, "127.0.0.4", guess)
        response = await app.redeem(await app.code())  # from 127.0.0.5
        assert response.status_code == 200, response.text
        standard = await http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(app.app_id, app.key_secret))
        assert standard.status_code == 200, standard.text
