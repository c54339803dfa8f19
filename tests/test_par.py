"""Pushed authorization requests (RFC 9126) on the in-process app: the endpoint (§2: client
authentication as at the token endpoint, in its rate-limit budget; the authorization endpoint's
checks as RFC 6749 §5.2 errors), the request_uri at the authorization endpoint (§4: single-use,
short-lived, bound to its client, carried through the sign-in and consent pages, stored as a keyed
hash), "require PAR" per app and server-wide (§5, §6), and the metadata (§5). openid-client's
``buildAuthorizationUrlWithPAR`` against a real server: tests/test_interop_openid_node.py."""

from __future__ import annotations

import base64
import hashlib
import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from acting_user import ActingUser, parse_forms
from grantd.config import Settings
from grantd.server import create_app
from support.neucron import PASSWORD, sign_up, unique_email
from test_openid_connect import REDIRECT_URI, RelyingParty, new_rp, redeem

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
URN = "urn:ietf:params:oauth:request_uri:"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def request_params(**more: str) -> tuple[dict[str, str], str]:
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "redirect_uri": REDIRECT_URI, "scope": "openid read_profile",
        "state": "st-" + secrets.token_hex(4), "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256", **more,
    }
    return params, verifier


async def push(api: httpx.AsyncClient, rp: RelyingParty, **params: str) -> httpx.Response:
    return await api.post("/oauth2/par", data=params, auth=(rp.client_id, rp.secret))


async def pushed(api: httpx.AsyncClient, rp: RelyingParty, **more: str) -> tuple[str, dict[str, str], str]:
    """A pushed request: its request_uri, parameters and PKCE verifier."""
    params, verifier = request_params(**more)
    response = await push(api, rp, **params)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["request_uri"].startswith(URN) and len(body["request_uri"]) > len(URN) + 30
    assert body["expires_in"] == 60
    assert "no-store" in response.headers["cache-control"]
    return body["request_uri"], params, verifier


def authorize_url(client_id: str, request_uri: str, **more: str) -> str:
    return ISSUER + "/oauth2/authorize?" + urlencode({"client_id": client_id, "request_uri": request_uri, **more})


def answer(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT_URI + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
async def rp(client: httpx.AsyncClient) -> RelyingParty:
    return await new_rp(client, permissions="read_profile")


@pytest.fixture
async def person(client: httpx.AsyncClient) -> str:
    email = unique_email()
    await sign_up(client, email)
    return email


@asynccontextmanager
async def browser_of(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as b:
        yield b


@asynccontextmanager
async def app_with(settings: Settings, **changes: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app of its own on the session's database, with ``changes`` to its settings."""
    application = create_app(settings.model_copy(update=changes))
    async with application.router.lifespan_context(application):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=ISSUER) as http:
            yield application, http


# ---------------------------------------------------------------- §2, §4: push, then authorize


async def test_push_then_authorize_and_redeem(app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str) -> None:
    request_uri, params, verifier = await pushed(client, rp)
    async with browser_of(app) as browser:
        user = ActingUser(browser, person, PASSWORD)
        # §4: parameters in the query other than client_id and request_uri are ignored.
        location = await user.authorize(authorize_url(rp.client_id, request_uri, state="forged", scope="nonsense"), REDIRECT_URI)
        # The pages carried the request_uri, never the parameters.
        for page in user.pages:
            assert params["code_challenge"] not in str(page.url)
    got = answer(location)
    assert got["state"] == params["state"] and got["iss"] == ISSUER
    response = await redeem(client, rp, got["code"], verifier)
    assert response.status_code == 200, response.text
    assert "id_token" in response.json()


async def test_signed_in_user_is_answered_at_once_and_the_request_uri_is_spent(
    app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str
) -> None:
    async with browser_of(app) as browser:
        user = ActingUser(browser, person, PASSWORD)
        request_uri, _, _ = await pushed(client, rp)
        await user.authorize(authorize_url(rp.client_id, request_uri), REDIRECT_URI)  # signs in, consents
        request_uri, params, verifier = await pushed(client, rp)
        first = await browser.get(authorize_url(rp.client_id, request_uri))
        assert first.status_code == 303
        got = answer(first.headers["location"])
        assert got["state"] == params["state"]
        # Single use (§4): the same request_uri again is refused on a page, not redirected.
        again = await browser.get(authorize_url(rp.client_id, request_uri))
        assert again.status_code == 400 and "location" not in again.headers
        assert "request_uri" in again.text
    assert (await redeem(client, rp, got["code"], verifier)).status_code == 200


async def test_the_consent_page_carries_the_request_uri_and_it_is_spent_by_the_decision(
    app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str
) -> None:
    async with browser_of(app) as browser:
        user = ActingUser(browser, person, PASSWORD)
        request_uri, _, _ = await pushed(client, rp, prompt="consent")
        location = await user.authorize(authorize_url(rp.client_id, request_uri), REDIRECT_URI, decision="deny")
        assert answer(location)["error"] == "access_denied"
        consent = [page for page in user.pages if 'name="decision"' in page.text][-1]
        form = [f for f in parse_forms(consent.text) if f.action.endswith("/oauth2/authorize")][0]
        assert dict(form.inputs).keys() == {"client_id", "request_uri", "csrf_token"}
        # The form again, after the answer: the request is spent.
        response = await browser.post(
            "/oauth2/authorize", data={**dict(form.inputs), "decision": "allow"}
        )
        assert response.status_code == 400 and "location" not in response.headers


async def test_prompt_login_in_a_pushed_request_is_met_by_the_sign_in(
    app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str
) -> None:
    async with browser_of(app) as browser:
        user = ActingUser(browser, person, PASSWORD)
        request_uri, _, _ = await pushed(client, rp)
        await user.authorize(authorize_url(rp.client_id, request_uri), REDIRECT_URI)
        request_uri, params, _ = await pushed(client, rp, prompt="login")
        location = await user.authorize(authorize_url(rp.client_id, request_uri), REDIRECT_URI)
        assert "code" in answer(location) and answer(location)["state"] == params["state"]
        assert any(urlsplit(str(page.url)).path == "/signin" for page in user.pages[-4:])


async def test_expired_request_uri_is_refused(app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str) -> None:
    ctx = app.state.ctx
    request_uri, _, _ = await pushed(client, rp)
    now = ctx.now()
    try:
        ctx.now = lambda: now + 61  # type: ignore[method-assign]
        async with browser_of(app) as browser:
            response = await browser.get(authorize_url(rp.client_id, request_uri))
    finally:
        del ctx.now
    assert response.status_code == 400 and "location" not in response.headers


async def test_ttl_setting(settings: Settings, client: httpx.AsyncClient, rp: RelyingParty) -> None:
    async with app_with(settings, pushed_authorization_request_ttl=5) as (_, http):
        params, _ = request_params()
        response = await push(http, rp, **params)
        assert response.status_code == 201 and response.json()["expires_in"] == 5


async def test_another_clients_request_uri_is_refused(
    app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str
) -> None:
    other = await new_rp(client, permissions="read_profile")
    request_uri, _, _ = await pushed(client, rp)
    async with browser_of(app) as browser:
        for url in (
            authorize_url(other.client_id, request_uri, redirect_uri=REDIRECT_URI),
            authorize_url(rp.client_id, URN + "guessed" + secrets.token_urlsafe(8)),
            authorize_url(rp.client_id, "https://rp.example.com/request.jwt"),
        ):
            response = await browser.get(url)
            assert response.status_code == 400 and "location" not in response.headers, url
        # Still usable by its own client: refusals spend nothing.
        user = ActingUser(browser, person, PASSWORD)
        assert "code" in answer(await user.authorize(authorize_url(rp.client_id, request_uri), REDIRECT_URI))


# ---------------------------------------------------------------- §2.1, §2.3: the endpoint's errors


async def test_bad_client_authentication_is_401(client: httpx.AsyncClient, rp: RelyingParty) -> None:
    params, _ = request_params()
    for auth, data in (
        ((rp.client_id, "gks_wrong_secret"), params),
        (None, params),
        (None, {**params, "client_id": rp.client_id}),  # a confidential client without its secret
    ):
        response = await client.post("/oauth2/par", data=data, auth=auth)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")


async def test_invalid_requests_are_400(client: httpx.AsyncClient, rp: RelyingParty) -> None:
    cases = {
        "unsupported_response_type": {"response_type": "token"},
        "invalid_request": {"request_uri": URN + "x"},
        "invalid_scope": {"scope": "openid write_everything"},
    }
    for error, change in cases.items():
        params, _ = request_params(**change)
        response = await push(client, rp, **params)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == error, response.text
        assert "no-store" in response.headers["cache-control"]
    params, _ = request_params(redirect_uri="https://evil.example.com/cb")
    response = await push(client, rp, **params)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    params, _ = request_params()
    del params["code_challenge"], params["code_challenge_method"]
    response = await client.post("/oauth2/par", data={**params, "client_id": (await public_rp(client)).client_id})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request", response.text


async def public_rp(client: httpx.AsyncClient) -> RelyingParty:
    _, dev_token = await sign_up(client)
    body = {"name": "Public RP", "redirect_uris": [REDIRECT_URI], "permissions": "read_profile", "client_type": "public"}
    response = await client.post("/v1/apps", json=body, headers={"Authorization": dev_token})
    assert response.status_code == 200, response.text
    return RelyingParty(response.json()["data"]["app_id"], "", dev_token)


async def test_public_client_pushes_with_client_id_and_pkce(app: Any, client: httpx.AsyncClient, person: str) -> None:
    rp = await public_rp(client)
    params, verifier = request_params()
    response = await client.post("/oauth2/par", data={**params, "client_id": rp.client_id})
    assert response.status_code == 201, response.text
    async with browser_of(app) as browser:
        location = await ActingUser(browser, person, PASSWORD).authorize(
            authorize_url(rp.client_id, response.json()["request_uri"]), REDIRECT_URI
        )
    token = await client.post("/oauth2/token", data={
        "grant_type": "authorization_code", "code": answer(location)["code"], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier, "client_id": rp.client_id,
    })
    assert token.status_code == 200, token.text


# ---------------------------------------------------------------- §5, §6: require PAR


async def test_require_par_per_app(app: Any, client: httpx.AsyncClient, person: str) -> None:
    rp = await new_rp(client, permissions="read_profile", require_pushed_authorization_requests=True)
    got = await client.get(f"/v1/apps/{rp.client_id}", headers={"Authorization": rp.dev_token})
    assert got.json()["data"]["require_pushed_authorization_requests"] is True, got.text
    params, _ = request_params()
    async with browser_of(app) as browser:
        response = await browser.get("/oauth2/authorize?" + urlencode({**params, "client_id": rp.client_id}))
        assert response.status_code == 303
        refused = answer(response.headers["location"])
        assert refused["error"] == "invalid_request" and refused["state"] == params["state"]
        request_uri, _, _ = await pushed(client, rp)
        location = await ActingUser(browser, person, PASSWORD).authorize(authorize_url(rp.client_id, request_uri), REDIRECT_URI)
        assert "code" in answer(location)
    bad = await client.patch(
        f"/v1/apps/{rp.client_id}", json={"require_pushed_authorization_requests": "yes"},
        headers={"Authorization": rp.dev_token},
    )
    assert bad.status_code == 400, bad.text


async def test_require_par_server_wide(settings: Settings, client: httpx.AsyncClient, rp: RelyingParty) -> None:
    async with app_with(settings, require_pushed_authorization_requests=True) as (_, http):
        metadata = (await http.get("/.well-known/openid-configuration")).json()
        assert metadata["require_pushed_authorization_requests"] is True
        params, _ = request_params()
        response = await http.get("/oauth2/authorize?" + urlencode({**params, "client_id": rp.client_id}))
        assert response.status_code == 303
        assert answer(response.headers["location"])["error"] == "invalid_request"
        request_uri, _, _ = await pushed(http, rp)
        response = await http.get(authorize_url(rp.client_id, request_uri))
        assert response.status_code == 303 and urlsplit(response.headers["location"]).path == "/signin"


async def test_discovery(client: httpx.AsyncClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        metadata = (await client.get(path)).json()
        assert metadata["pushed_authorization_request_endpoint"] == ISSUER + "/oauth2/par"
        assert metadata["require_pushed_authorization_requests"] is False




async def test_expired_requests_are_pruned(app: Any, client: httpx.AsyncClient, rp: RelyingParty) -> None:
    from grantd.core import retention

    ctx = app.state.ctx
    await pushed(client, rp)
    now = ctx.now()
    try:
        ctx.now = lambda: now + 61  # type: ignore[method-assign]
        pruned = await retention.prune(ctx, expired_before=now + 61)
        assert pruned.pushed_authorization_requests >= 1
        assert (await retention.prune(ctx, expired_before=now + 61)).pushed_authorization_requests == 0
    finally:
        del ctx.now


async def test_the_sign_in_page_shows_the_pushed_login_hint(app: Any, client: httpx.AsyncClient, rp: RelyingParty) -> None:
    request_uri, _, _ = await pushed(client, rp, login_hint="ada@example.com")
    async with browser_of(app) as browser:
        response = await browser.get(authorize_url(rp.client_id, request_uri))
        assert response.status_code == 303
        signin = await browser.get(response.headers["location"])
        assert signin.status_code == 200
        assert 'value="ada@example.com"' in signin.text
        assert "Relying Party" in signin.text  # the app's name: the pushed request's app


async def test_stored_by_keyed_hash_and_spent_once_of_two_at_once(app: Any, client: httpx.AsyncClient, rp: RelyingParty) -> None:
    import asyncio

    from sqlalchemy import select

    from grantd.core import par
    from grantd.core.errors import InvalidRequestUri
    from grantd.store.schema import pushed_authorization_requests as table

    ctx = app.state.ctx
    request_uri, params, _ = await pushed(client, rp)
    random_part = request_uri.removeprefix(URN)
    async with ctx.db.read() as conn:
        row = (await conn.execute(select(table).where(table.c.request_hash == ctx.hasher.hash(random_part)))).one()
    assert random_part not in repr(tuple(row)) and row.app_id == rp.client_id
    assert row.expires_at - row.created_at == 60
    opened = await par.open_request(ctx, rp.client_id, request_uri)
    assert opened.params["state"] == params["state"] and opened.carried == {"client_id": rp.client_id, "request_uri": request_uri}
    results = await asyncio.gather(par.spend(ctx, opened), par.spend(ctx, opened), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["InvalidRequestUri", "NoneType"], results
    with pytest.raises(InvalidRequestUri):
        await par.open_request(ctx, rp.client_id, request_uri)


async def test_once_opened_the_browser_has_time_to_sign_in(app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: str) -> None:
    """Opened within its lifetime, the request waits for the sign-in and consent (``par.BROWSER_TIME``);
    never opened, it expires with its lifetime (test_expired_request_uri_is_refused)."""
    from sqlalchemy import select

    from grantd.core import par
    from grantd.store.schema import pushed_authorization_requests as table

    ctx = app.state.ctx
    request_uri, params, _ = await pushed(client, rp)
    request_hash = ctx.hasher.hash(request_uri.removeprefix(URN))

    async def row() -> Any:
        async with ctx.db.read() as conn:
            return (await conn.execute(select(table).where(table.c.request_hash == request_hash))).one()

    assert (await row()).opened_at is None
    async with browser_of(app) as browser:
        first = await browser.get(authorize_url(rp.client_id, request_uri))
        assert first.status_code == 303 and urlsplit(first.headers["location"]).path == "/signin"
        opened = await row()
        assert opened.opened_at is not None and opened.expires_at == opened.opened_at + par.BROWSER_TIME
        assert opened.spent_at is None
        location = await ActingUser(browser, person, PASSWORD).authorize(ISSUER + first.headers["location"], REDIRECT_URI)
    assert answer(location)["state"] == params["state"]
    assert (await row()).spent_at is not None


async def test_failed_client_authentication_counts_in_the_token_endpoints_budget(
    settings: Settings, client: httpx.AsyncClient, rp: RelyingParty
) -> None:
    """A secret can be guessed at /oauth2/par as at /oauth2/token: the failures share one budget."""
    async with app_with(settings, rate_limit_token_failures_per_client=2) as (_, http):
        params, _ = request_params()
        wrong = {"client_id": rp.client_id, "client_secret": rp.secret[:-4] + "AAAA", **params}
        assert (await http.post("/oauth2/par", data=wrong)).status_code == 401
        token = await http.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": rp.client_id,
                                                       "client_secret": rp.secret[:-4] + "AAAA"})
        assert token.status_code == 401
        limited = await http.post("/oauth2/par", data={**params, "client_id": rp.client_id, "client_secret": rp.secret})
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"] and "retry-after" in limited.headers
