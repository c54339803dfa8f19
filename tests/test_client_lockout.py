"""Nobody can lock a client out of the token endpoints: failures are budgeted per client address
(and per client named from that address), never per client alone, so junk requests naming a
client's id from one address leave its correct requests from any other address served. The
client's ids are no secret (a public client's id is public; a key id used to show in each end
user's own audit view, which no longer shows it). Real `grantd serve` processes, real sockets,
requests from distinct loopback addresses (127.0.0.2, … route to the server on Linux), or through
a proxy at 127.0.0.1 the server is told to trust (GRANTD_FORWARDED_ALLOW_IPS), which names each
client in X-Forwarded-For."""

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


def through_proxy(server: ServerProcess, forwarded_for: str) -> httpx.AsyncClient:
    """A client behind a proxy at 127.0.0.1: its requests come from there and carry ``forwarded_for``
    in X-Forwarded-For, as a load balancer sends them."""
    return httpx.AsyncClient(
        base_url=server.base_url, headers={"X-Forwarded-For": forwarded_for}, timeout=TIMEOUT,
        transport=httpx.AsyncHTTPTransport(local_address="127.0.0.1"),
    )


async def junk(
    server: ServerProcess, address: str, send: Callable[[httpx.AsyncClient], Any], *, forwarded_for: str | None = None
) -> Counter[int]:
    """JUNK failing requests from ``address`` (with ``forwarded_for``: through the proxy at 127.0.0.1);
    their statuses, the last ones refused by the limit."""
    statuses: Counter[int] = Counter()
    client = from_address(server, address) if forwarded_for is None else through_proxy(server, forwarded_for)
    async with client as attacker:
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

        await junk(server, "127.0.0.4", key_guess(app))
        await still_served(http, app)  # from 127.0.0.5


def key_guess(app: Flow, *, spoof: bool = False) -> Callable[[httpx.AsyncClient], Any]:
    """Failing Neucron token requests (the hot route) naming ``app``'s key; with ``spoof``, each
    claiming another address of its own in X-Forwarded-For."""

    def guess(attacker: httpx.AsyncClient) -> Any:
        body = {"auth_code": secrets.token_urlsafe(32), "key_id": app.key_id, "key_secret": "gks_" + secrets.token_urlsafe(32)}
        headers = {"X-Forwarded-For": f"192.0.2.{secrets.randbelow(254) + 1}"} if spoof else {}
        return attacker.post("/oauth/token", json={"token": body}, headers=headers)

    return guess


async def still_served(http: httpx.AsyncClient, app: Flow) -> None:
    """``app``'s correct requests from ``http``'s address are served: a Neucron code redemption
    and an OAuth 2.0 client_credentials request."""
    response = await app.redeem(await app.code())
    assert response.status_code == 200, response.text
    standard = await http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(app.app_id, app.key_secret))
    assert standard.status_code == 200, standard.text


async def own_addresses(http: httpx.AsyncClient, token: str) -> set[str | None]:
    """The client addresses of the events in the signed-in person's own audit view."""
    response = await http.get("/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return {event["address"] for event in response.json()["data"]["events"]}


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(
    database_url: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(database_url, env={**LIMITS, "GRANTD_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    async with through_proxy(server, "198.51.100.9") as http:
        app = await new_app(await developer(http))
        assert await own_addresses(http, app.dev_token) == {"198.51.100.9"}  # the client's, not the proxy's

        await junk(server, "127.0.0.1", key_guess(app), forwarded_for="203.0.113.7")
        await still_served(http, app)  # through the same proxy, for 198.51.100.9

        # A peer that is not a trusted proxy is its own address whatever it forwards: another
        # X-Forwarded-For on each request buys it no new budget.
        await junk(server, "127.0.0.2", key_guess(app, spoof=True))


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(
    database_url: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(database_url, env=LIMITS)
    async with through_proxy(server, "198.51.100.9") as http:
        app = await new_app(await developer(http))
        assert await own_addresses(http, app.dev_token) == {"127.0.0.1"}

        await junk(server, "127.0.0.2", key_guess(app, spoof=True))
        await still_served(http, app)  # from 127.0.0.1: another address
