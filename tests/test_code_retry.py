"""A code redemption whose answer was lost is retried, not replayed: the same client repeating the
same token request (same code, same key, same PKCE verifier, redirect_uri and state) within
GRANTD_CODE_RETRY_GRACE seconds of the redemption gets the same tokens again — the access token
re-signed with the same claims, the same refresh token, an ID token for an OpenID grant — nothing is
revoked, and ``code_retried`` is audited. Another verifier, another key, a refresh token already
used, or the same request after the window is a replay, as before: every token the code issued is
revoked (RFC 6749 §4.1.2, RFC 9700 §4.5). The Neucron token endpoints always take a retry;
/oauth2/token only with GRANTD_CODE_RETRY_AT_OAUTH2_TOKEN (by default RFC 6749 §4.1.2's "MUST deny")."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from acting_user import ActingUser, developer, new_app
from grantd.config import Settings
from grantd.server import create_app
from support.neucron import PASSWORD, Flow
from support.servers import TIMEOUT, ServerProcess
from test_oauth2_security import (  # noqa: F401  (fixtures)
    ISSUER, REGISTERED, Person, assert_oauth_error, authorize_url, claims_of, code_by_pages, dev, introspect, new_pkce, person,
    query_of, regular, token, tokens_of,
)

pytestmark = pytest.mark.db


@pytest.fixture
async def retrying(app: Any, settings: Settings) -> AsyncIterator[Any]:
    """Another server of the deployment (the session's database and secret) that takes retries at
    /oauth2/token: its app (``.state.ctx``) and a client of it."""
    application = create_app(settings.model_copy(update={"code_retry_at_oauth2_token": True}))
    async with application.router.lifespan_context(application):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER) as http:
            application.state.http = http
            yield application


async def _events(client: httpx.AsyncClient, flow: Flow) -> list[str]:
    """The app's audit events as its developer sees them."""
    response = await client.get("/v1/audit", headers={"Authorization": f"Bearer {flow.dev_token}"})
    assert response.status_code == 200, response.text
    return [event["event"] for event in response.json()["data"]["events"] if event["app_id"] == flow.app_id]


async def test_a_public_client_retrying_its_redemption_gets_the_same_tokens_over_real_sockets(
    database_url: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(database_url, env={"GRANTD_CODE_RETRY_AT_OAUTH2_TOKEN": "true"})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        flow = await new_app(await developer(http), client_type="public")
        verifier, challenge = new_pkce()
        url = authorize_url(flow, code_challenge=challenge, code_challenge_method="S256")
        code = query_of(await ActingUser(http, flow.extra["email"], PASSWORD).authorize(url, flow.redirect_uri))["code"][0]
        form = {
            "grant_type": "authorization_code", "client_id": flow.app_id, "code": code, "code_verifier": verifier,
            "redirect_uri": flow.redirect_uri,
        }
        first = tokens_of(await http.post("/oauth2/token", data=form))
        again = tokens_of(await http.post("/oauth2/token", data=form))
        assert claims_of(again["access_token"]) == claims_of(first["access_token"])  # same jti, iat, exp
        assert again["refresh_token"] == first["refresh_token"] and again["scope"] == first["scope"]
        assert "code_retried" in await _events(http, flow)
        assert "code_replayed" not in await _events(http, flow)
        # The refresh token works as if the first answer had arrived.
        refreshed = tokens_of(
            await http.post(
                "/oauth2/token", data={"grant_type": "refresh_token", "client_id": flow.app_id, "refresh_token": first["refresh_token"]}
            )
        )
        # Once the refresh token was used, the client had its answer: the code again is a replay.
        replay = await http.post("/oauth2/token", data=form)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
        refused = await http.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "client_id": flow.app_id, "refresh_token": refreshed["refresh_token"]}
        )
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
        assert "code_replayed" in await _events(http, flow)


async def test_by_default_the_standard_endpoint_denies_the_same_request_again(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    """RFC 6749 §4.1.2: a code used twice MUST be denied, and SHOULD revoke what it issued."""
    flow = await new_app(dev)
    code, verifier = await code_by_pages(await person(), flow)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REGISTERED, "code_verifier": verifier}
    first = tokens_of(await token(client, flow, **form))  # type: ignore[arg-type]
    assert_oauth_error(await token(client, flow, **form), "invalid_grant", 400)  # type: ignore[arg-type]
    assert await introspect(client, flow, first["access_token"]) == {"active": False}
    assert "code_replayed" in await _events(client, flow)


async def test_a_public_client_with_another_verifier_is_a_replay(retrying: Any, dev: Flow, person: Person) -> None:
    client = retrying.state.http
    flow = await new_app(dataclasses.replace(dev, client=client), client_type="public")
    code, verifier = await code_by_pages(await person(), flow)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REGISTERED}
    first = tokens_of(await token(client, flow, "none", code_verifier=verifier, **form))  # type: ignore[arg-type]
    other, _ = new_pkce()
    assert_oauth_error(await token(client, flow, "none", code_verifier=other, **form), "invalid_grant", 400)  # type: ignore[arg-type]
    # The replay revoked what the code issued: the right verifier gets nothing now either.
    assert_oauth_error(await token(client, flow, "none", code_verifier=verifier, **form), "invalid_grant", 400)  # type: ignore[arg-type]
    assert_oauth_error(
        await token(client, flow, "none", grant_type="refresh_token", refresh_token=first["refresh_token"]), "invalid_grant"
    )


async def test_a_confidential_openid_redemption_retried_gets_its_tokens_and_an_id_token(
    retrying: Any, dev: Flow, person: Person
) -> None:
    client = retrying.state.http
    flow = await new_app(dataclasses.replace(dev, client=client))
    code, verifier = await code_by_pages(await person(), flow, scope="openid read_profile", nonce="n-1")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REGISTERED, "code_verifier": verifier}
    first = tokens_of(await token(client, flow, "basic", **form))  # type: ignore[arg-type]
    again = tokens_of(await token(client, flow, "basic", **form))  # type: ignore[arg-type]
    assert claims_of(again["access_token"])["jti"] == claims_of(first["access_token"])["jti"]
    assert again["refresh_token"] == first["refresh_token"]
    assert claims_of(again["id_token"])["nonce"] == "n-1" == claims_of(first["id_token"])["nonce"]
    assert claims_of(again["id_token"])["sub"] == claims_of(first["id_token"])["sub"]
    for value in (first["access_token"], first["refresh_token"]):
        assert (await introspect(client, flow, value))["active"] is True

    # Another key of the same app presenting the code: a replay.
    created = await client.post(f"/v1/apps/{flow.app_id}/keys", headers={"Authorization": flow.dev_token})
    spare = dataclasses.replace(flow, key_secret=created.json()["data"]["key_secret"])
    assert_oauth_error(await token(client, spare, "basic", **form), "invalid_grant", 400)  # type: ignore[arg-type]
    for value in (first["access_token"], first["refresh_token"]):
        assert await introspect(client, spare, value) == {"active": False}


async def test_after_the_window_the_same_request_is_a_replay(retrying: Any, dev: Flow, person: Person) -> None:
    client, app = retrying.state.http, retrying
    flow = await new_app(dataclasses.replace(dev, client=client))
    code, verifier = await code_by_pages(await person(), flow)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REGISTERED, "code_verifier": verifier}
    first = tokens_of(await token(client, flow, **form))  # type: ignore[arg-type]
    ctx = app.state.ctx
    redeemed_at, grace = claims_of(first["access_token"])["iat"], ctx.settings.code_retry_grace
    ctx.now = lambda: redeemed_at + grace  # type: ignore[method-assign]
    try:
        assert claims_of(tokens_of(await token(client, flow, **form))["access_token"])["jti"] == claims_of(first["access_token"])["jti"]  # type: ignore[arg-type]
        ctx.now = lambda: redeemed_at + grace + 1  # type: ignore[method-assign]
        assert_oauth_error(await token(client, flow, **form), "invalid_grant", 400)  # type: ignore[arg-type]
    finally:
        del ctx.now
    assert await introspect(client, flow, first["access_token"]) == {"active": False}
    assert "code_replayed" in await _events(client, flow)


async def test_the_neucron_token_request_retried_gets_the_same_token(client: httpx.AsyncClient, dev: Flow) -> None:
    flow = await new_app(dev)
    code = await flow.code()
    first, again = await flow.redeem(code), await flow.redeem(code)
    assert first.status_code == again.status_code == 200, again.text
    token_first, token_again = first.json()["data"]["access_token"], again.json()["data"]["access_token"]
    assert claims_of(token_again) == claims_of(token_first)
    assert (await introspect(client, flow, token_first))["active"] is True
    assert "code_retried" in await _events(client, flow)
