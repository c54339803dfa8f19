"""The standard dialect against the OAuth 2.0 Security BCP (RFC 9700) and RFC 6749 §5.2, through HTTP.

One test (or one parametrised family) per rule that applies to an authorization server:
exact redirect URI matching (§4.1.3), PKCE and its downgrades (§2.1.1, §4.8), code reuse
revoking what the code issued (RFC 6749 §4.1.2), codes and tokens bound to their client
(§4.10), refresh token rotation with reuse detection and the grace window (§4.14.2), state
passed through (§4.7), no tokens in URLs (§2.1.2, §4.3), the ``iss`` authorization response
parameter (§4.4.2.1, RFC 9207), no open redirector (§4.11), 303 not 307 (§4.12), no framing
(§4.16), client credentials, the RFC 6749 §5.2 error shape of the form endpoints with no input
yielding a 500, and the two dialects sharing one code store. The in-process app serves these
(one test runs a real server for a setting); where the hosted pages are needed,
tests/acting_user.py acts as the user.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import update

from acting_user import ActingUser, developer, new_app, new_person, parse_forms
from grantd.store.schema import refresh_tokens
from support.neucron import PASSWORD, Flow, new_flow

pytestmark = pytest.mark.db

ISSUER = "http://testserver"  # the in-process app's GRANTD_ISSUER (conftest)
Person = Callable[..., Awaitable[ActingUser]]


# ---------------------------------------------------------------- helpers


def new_pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), computed here rather than by grantd (RFC 7636 §4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(flow: Flow, **params: str | None) -> str:
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": flow.app_id,
        "redirect_uri": flow.redirect_uri,
        "scope": "read_profile",
        "state": "st-1",
    }
    query.update(params)
    return "/oauth2/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def post_form(
    client: httpx.AsyncClient, path: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        path, content=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    )


async def token(client: httpx.AsyncClient, flow: Flow, auth: str = "post", **form: str) -> httpx.Response:
    """POST /oauth2/token as ``flow``'s app: client_secret_post, client_secret_basic, or a public client."""
    if auth == "post":
        return await post_form(
            client, "/oauth2/token", {**form, "client_id": flow.app_id, "client_secret": flow.key_secret}
        )
    if auth == "basic":
        return await post_form(client, "/oauth2/token", form, basic(flow.app_id, flow.key_secret))
    return await post_form(client, "/oauth2/token", {**form, "client_id": flow.app_id})


def tokens_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    return body


async def introspect(client: httpx.AsyncClient, flow: Flow, value: str) -> dict[str, Any]:
    response = await post_form(client, "/oauth2/introspect", {"token": value}, basic(flow.app_id, flow.key_secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def claims_of(access_token: str) -> dict[str, Any]:
    return jwt.decode(access_token, options={"verify_signature": False})


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def assert_oauth_error(response: httpx.Response, error: str | None = None, status: int | None = None) -> dict[str, Any]:
    """RFC 6749 §5.2: a 4xx JSON body of exactly error and error_description, not cached;
    invalid_client is 401 with WWW-Authenticate (and a 401 is always invalid_client)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("cache-control") == "no-store", response.headers
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["error_description"], str) and body["error_description"]
    if body["error"] == "invalid_client" or response.status_code == 401:
        assert (response.status_code, body["error"]) == (401, "invalid_client"), body
        assert response.headers.get("www-authenticate", "").lower().startswith("basic"), response.headers
    if error is not None:
        assert body["error"] == error, body
    if status is not None:
        assert response.status_code == status, body
    return body


def assert_shown_not_redirected(response: httpx.Response) -> None:
    """An error about the client or its redirect URI: a page, never a redirect (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, (response.status_code, response.headers, response.text[:500])
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


@pytest.fixture(scope="module")
async def dev(client: httpx.AsyncClient) -> Flow:
    """One developer and one Neucron end user for the module; each test registers apps of its own."""
    return await developer(client)


@pytest.fixture(scope="module")
async def regular(app: Any, client: httpx.AsyncClient) -> AsyncIterator[ActingUser]:
    """An end user shared by the module's tests (consent is per app, and every test has its own apps)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as browser:
        user_id, email = await new_person(client)
        yield ActingUser(browser, email, PASSWORD, user_id=user_id)


@pytest.fixture
async def person(app: Any, client: httpx.AsyncClient, regular: ActingUser) -> AsyncIterator[Person]:
    """``await person()``: the module's shared user; ``await person(fresh=True)``: a new account with a new
    browser (not signed in), for tests that go through sign-in."""
    browsers: list[httpx.AsyncClient] = []

    async def make(fresh: bool = False) -> ActingUser:
        if not fresh:
            return regular
        browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
        browsers.append(browser)
        user_id, email = await new_person(client)
        return ActingUser(browser, email, PASSWORD, user_id=user_id)

    yield make
    for browser in browsers:
        await browser.aclose()


async def code_by_pages(
    user: ActingUser, flow: Flow, *, pkce: bool = True, **params: str | None
) -> tuple[str, str | None]:
    """(code, code_verifier) from /oauth2/authorize, the user signing in and allowing."""
    verifier, challenge = new_pkce() if pkce else (None, None)
    if pkce:
        params = {"code_challenge": challenge, "code_challenge_method": "S256", **params}
    callback = await user.authorize(authorize_url(flow, **params), flow.redirect_uri)
    query = query_of(callback)
    assert "code" in query, callback
    return query["code"][0], verifier


# ---------------------------------------------------------------- exact redirect URI matching (RFC 9700 §4.1.3)

REGISTERED = "https://app.example.com/callback"
NEAR_MISSES = [
    "https://app.example.com/callback/",  # trailing slash
    "https://APP.example.com/callback",  # host case
    "https://app.example.com/Callback",  # path case
    "HTTPS://app.example.com/callback",  # scheme case
    "https://app.example.com/callback?x=1",  # added query
    "https://app.example.com/callback?",  # empty query
    "https://app.example.com/callback#frag",  # fragment
    "https://app.example.com:443/callback",  # explicit default port
    "https://app.example.com/%63allback",  # percent-encoded
    "https://app.example.com/callback/../callback",  # dot segments
    "https://app.example.com/callbackx",  # prefix match
    "https://app.example.com.evil.example/callback",  # suffix host
    "https://evil@app.example.com/callback",  # user info
    "http://app.example.com/callback",  # scheme downgrade
    "https://app.example.com/callback ",  # trailing space
]


@pytest.mark.parametrize("signed_in", [False, True], ids=["signed-out", "signed-in"])
async def test_redirect_uri_must_match_exactly(
    client: httpx.AsyncClient, dev: Flow, person: Person, signed_in: bool
) -> None:
    flow = await new_app(dev)
    assert flow.redirect_uri == REGISTERED
    user = await person(fresh=not signed_in)
    if signed_in:
        await code_by_pages(user, flow)  # signs in and consents to read_profile
    for candidate in NEAR_MISSES:
        response = await user.http.get(
            authorize_url(flow, redirect_uri=candidate, code_challenge=new_pkce()[1], code_challenge_method="S256")
        )
        assert_shown_not_redirected(response)
    # The registered one, character for character, is accepted.
    response = await user.http.get(authorize_url(flow, code_challenge=new_pkce()[1], code_challenge_method="S256"))
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    # Signed in with read_profile granted: straight back with a code; signed out: to the sign-in page first.
    assert location.startswith(REGISTERED + "?code=" if signed_in else "/signin?next="), location


async def test_unknown_client_or_ambiguous_redirect_is_shown_not_redirected(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow = await new_app(dev, redirect_uris=[REGISTERED, "https://app.example.com/other"])
    user = await person(fresh=True)
    # Unknown or missing client_id: nowhere safe to go back to.
    for bad in ("00000000-0000-4000-8000-000000000000", "", "x" * 5000):
        assert_shown_not_redirected(await user.http.get(authorize_url(flow, client_id=bad)))
    # Two registered URIs and none named: ambiguous.
    assert_shown_not_redirected(await user.http.get(authorize_url(flow, redirect_uri=None)))
    # redirect_uri given twice.
    url = authorize_url(flow) + "&" + urlencode({"redirect_uri": "https://evil.example/cb"})
    assert_shown_not_redirected(await user.http.get(url))


async def test_redirect_uri_tampered_in_the_consent_form_is_not_followed(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    """The consent POST re-checks the redirect URI: editing the hidden input leads nowhere."""
    flow = await new_app(dev)
    user = await person()
    await code_by_pages(user, flow)  # signed in, read_profile granted
    # Asking for more shows the consent page again.
    page = await user.http.get(
        authorize_url(flow, scope="read_profile write_data", code_challenge=new_pkce()[1], code_challenge_method="S256")
    )
    assert page.status_code == 200, page.text
    form = next(f for f in parse_forms(page.text) if f.path(str(page.url)) == "/oauth2/authorize")
    for evil in ("https://evil.example/callback", REGISTERED + "/"):
        data = [(k, evil if k == "redirect_uri" else v) for k, v in form.inputs] + [("decision", "allow")]
        response = await user.http.post(
            "/oauth2/authorize", content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert_shown_not_redirected(response)


# ---------------------------------------------------------------- PKCE (RFC 9700 §2.1.1, §4.8)


async def test_code_issued_with_challenge_needs_the_verifier(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow = await new_app(dev)
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    assert verifier
    assert_oauth_error(
        await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED),
        "invalid_grant",
        400,
    )
    wrong = new_pkce()[0]
    assert_oauth_error(
        await token(
            client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=wrong
        ),
        "invalid_grant",
        400,
    )
    # The challenge itself is not a verifier.
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert_oauth_error(
        await token(
            client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=challenge
        ),
        "invalid_grant",
    )


async def test_code_issued_without_challenge_refuses_a_verifier(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    """A verifier for a code that had no challenge is a downgrade attempt (RFC 9700 §4.8.2)."""
    flow = await new_app(dev)  # confidential: PKCE optional
    user = await person()
    code, _ = await code_by_pages(user, flow, pkce=False)
    response = await token(
        client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=new_pkce()[0]
    )
    assert_oauth_error(response, "invalid_grant", 400)
    # Same for a Neucron code (never bound to a challenge).
    neucron_code = await flow.code()
    response = await token(
        client,
        flow,
        grant_type="authorization_code",
        code=neucron_code,
        redirect_uri=REGISTERED,
        code_verifier=new_pkce()[0],
    )
    assert_oauth_error(response, "invalid_grant", 400)


@pytest.mark.parametrize(
    "pkce_params",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},  # RFC 7636 would default to plain
        {"code_challenge_method": "s256"},
        {"code_challenge_method": "S512"},
    ],
    ids=["plain", "absent-method", "lowercase", "unknown"],
)
async def test_pkce_methods_other_than_s256_are_refused(
    client: httpx.AsyncClient, dev: Flow, person: Person, pkce_params: dict[str, str | None]
) -> None:
    flow = await new_app(dev)
    user = await person()
    verifier = new_pkce()[0]
    challenge = verifier if pkce_params["code_challenge_method"] in ("plain", None) else new_pkce()[1]
    response = await user.http.get(authorize_url(flow, code_challenge=challenge, **pkce_params))
    assert response.status_code == 303, response.text
    query = query_of(response.headers["location"])
    assert response.headers["location"].startswith(REGISTERED + "?")
    assert query["error"] == ["invalid_request"] and "code" not in query
    assert query["iss"] == [ISSUER] and query["state"] == ["st-1"]


async def test_public_client_must_use_pkce(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    flow = await new_app(dev, client_type="public")
    user = await person()
    response = await user.http.get(authorize_url(flow))
    assert response.status_code == 303
    query = query_of(response.headers["location"])
    assert query["error"] == ["invalid_request"] and "code" not in query and query["iss"] == [ISSUER]
    # With PKCE it works, and the public client redeems with client_id and code_verifier alone.
    code, verifier = await code_by_pages(user, flow)
    assert_oauth_error(
        await token(client, flow, "none", grant_type="authorization_code", code=code, redirect_uri=REGISTERED),
        "invalid_grant",
    )
    body = tokens_of(
        await token(
            client,
            flow,
            "none",
            grant_type="authorization_code",
            code=code,
            redirect_uri=REGISTERED,
            code_verifier=verifier,
        )
    )  # type: ignore[arg-type]
    assert claims_of(body["access_token"])["client_id"] == flow.app_id
    # A public client may not pass off a Neucron (challenge-less) code, nor use client_credentials.
    neucron_code = await flow.code()
    assert_oauth_error(
        await token(client, flow, "none", grant_type="authorization_code", code=neucron_code), "invalid_grant"
    )
    assert_oauth_error(await token(client, flow, "none", grant_type="client_credentials"), "unauthorized_client")


# ---------------------------------------------------------------- codes: single use, bound to client and redirect URI


async def test_code_reuse_revokes_every_token_it_issued(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    flow = await new_app(dev)
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REGISTERED, "code_verifier": verifier}
    first = tokens_of(await token(client, flow, **form))  # type: ignore[arg-type]
    refreshed = tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]))
    assert (await introspect(client, flow, first["access_token"]))["active"] is True
    assert (await introspect(client, flow, refreshed["refresh_token"]))["active"] is True

    assert_oauth_error(await token(client, flow, **form), "invalid_grant", 400)  # type: ignore[arg-type]
    for value in (first["access_token"], first["refresh_token"], refreshed["access_token"], refreshed["refresh_token"]):
        assert await introspect(client, flow, value) == {"active": False}
    assert_oauth_error(
        await token(client, flow, grant_type="refresh_token", refresh_token=refreshed["refresh_token"]), "invalid_grant"
    )


async def test_code_is_bound_to_its_client_and_redirect_uri(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow = await new_app(dev)
    other = await new_app(dev)
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    # Another app cannot redeem it, and its attempt does not burn or revoke the code.
    assert_oauth_error(await token(client, other, redirect_uri=REGISTERED, **form), "invalid_grant")  # type: ignore[arg-type]
    body = tokens_of(await token(client, flow, redirect_uri=REGISTERED, **form))  # type: ignore[arg-type]
    # A redirect_uri other than the one the code was issued for (RFC 6749 §4.1.3).
    code2, verifier2 = await code_by_pages(user, flow)
    form2 = {"grant_type": "authorization_code", "code": code2, "code_verifier": verifier2}
    for wrong in (REGISTERED + "/", "https://evil.example/callback"):
        assert_oauth_error(await token(client, flow, redirect_uri=wrong, **form2), "invalid_grant")  # type: ignore[arg-type]
    assert (await introspect(client, flow, body["access_token"]))["active"] is True
    # The other app sees nothing of these tokens and cannot revoke them.
    assert await introspect(client, other, body["access_token"]) == {"active": False}
    assert await introspect(client, other, body["refresh_token"]) == {"active": False}
    response = await post_form(
        client, "/oauth2/revoke", {"token": body["access_token"]}, basic(other.app_id, other.key_secret)
    )
    assert response.status_code == 200
    assert (await introspect(client, flow, body["access_token"]))["active"] is True


# ---------------------------------------------------------------- refresh token rotation (RFC 9700 §4.14.2)


async def _tokens_with_refresh(client: httpx.AsyncClient, dev: Flow, person: Person) -> tuple[Flow, dict[str, Any]]:
    flow = await new_app(dev)
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    body = tokens_of(
        await token(
            client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=verifier
        )  # type: ignore[arg-type]
    )
    return flow, body


async def test_refresh_reuse_after_the_grace_window_revokes_the_family(
    app: Any, client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow, first = await _tokens_with_refresh(client, dev, person)
    second = tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]))
    third = tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=second["refresh_token"]))
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    assert (await introspect(client, flow, third["refresh_token"]))["active"] is True

    # The first refresh token was rotated a minute ago: well past the grace window.
    ctx = app.state.ctx
    async with ctx.db.write() as tx:
        await tx.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == ctx.hasher.hash(first["refresh_token"]))
            .values(rotated_at=refresh_tokens.c.rotated_at - ctx.settings.refresh_token_grace - 60)
        )
    assert_oauth_error(
        await token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]),
        "invalid_grant",
        400,
    )

    # Every token of the family is dead, the newest included.
    for body in (first, second, third):
        assert await introspect(client, flow, body["access_token"]) == {"active": False}
        assert await introspect(client, flow, body["refresh_token"]) == {"active": False}
    assert_oauth_error(
        await token(client, flow, grant_type="refresh_token", refresh_token=third["refresh_token"]), "invalid_grant"
    )


async def test_concurrent_duplicate_refresh_within_the_grace_window_gets_the_same_result(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow, first = await _tokens_with_refresh(client, dev, person)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    a, b = await asyncio.gather(token(client, flow, **form), token(client, flow, "basic", **form))
    a_body, b_body = tokens_of(a), tokens_of(b)
    assert a_body["refresh_token"] == b_body["refresh_token"] != first["refresh_token"]
    assert claims_of(a_body["access_token"])["jti"] == claims_of(b_body["access_token"])["jti"]
    # Once more, a moment later: still the same answer, and the family is intact.
    c_body = tokens_of(await token(client, flow, **form))
    assert c_body["refresh_token"] == a_body["refresh_token"]
    assert claims_of(c_body["access_token"])["jti"] == claims_of(a_body["access_token"])["jti"]
    assert (await introspect(client, flow, a_body["refresh_token"]))["active"] is True
    assert (await introspect(client, flow, a_body["access_token"]))["active"] is True
    assert (await introspect(client, flow, first["access_token"]))["active"] is True
    # The successor rotates as usual.
    d_body = tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=a_body["refresh_token"]))
    assert d_body["refresh_token"] != a_body["refresh_token"]


async def test_without_a_grace_window_any_refresh_reuse_revokes_the_family(
    database_url: str, server_factory: Callable[..., Any]
) -> None:
    """GRANTD_REFRESH_TOKEN_GRACE=0 on a real server: a reuse even in the same second revokes the family."""
    server = server_factory(database_url, env={"GRANTD_REFRESH_TOKEN_GRACE": "0"})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        flow = await new_flow(http)
        code = await flow.code()
        first = tokens_of(await token(http, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED))
        second = tokens_of(await token(http, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]))
        assert_oauth_error(
            await token(http, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]), "invalid_grant"
        )
        for body in (first, second):
            assert await introspect(http, flow, body["access_token"]) == {"active": False}
            assert await introspect(http, flow, body["refresh_token"]) == {"active": False}


async def test_refresh_cannot_widen_the_scope(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    flow, first = await _tokens_with_refresh(client, dev, person)  # scope read_profile
    assert first["scope"] == "read_profile"
    body = assert_oauth_error(
        await token(
            client,
            flow,
            grant_type="refresh_token",
            refresh_token=first["refresh_token"],
            scope="read_profile write_data",
        ),
        "invalid_scope",
    )
    assert "write_data" in body["error_description"]
    # The refused request did not spend the refresh token.
    assert (
        tokens_of(await token(client, flow, grant_type="refresh_token", refresh_token=first["refresh_token"]))["scope"]
        == "read_profile"
    )


# ---------------------------------------------------------------- the authorization response: state, iss, no tokens


ODD_STATES = [
    "a b+c&d=e/f?g#h%20i;j,k",
    "état-✓-日本語-🙂",
    "'\"<script>alert(1)</script>",
    "..%2F..%2Fetc%2Fpasswd",
    "x" * 1000,
]


async def test_state_is_passed_through_untouched(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    """Character for character, on every way back: allow (the first time through sign-in), deny,
    an error redirect, and a request already granted."""
    user = await person(fresh=True)
    _, challenge = new_pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    for state in ODD_STATES:
        flow = await new_app(dev)
        allowed = await user.authorize(authorize_url(flow, state=state, **pkce), flow.redirect_uri)
        denied = await user.authorize(
            authorize_url(flow, state=state, scope="write_data", **pkce), flow.redirect_uri, decision="deny"
        )
        failed = await user.authorize(
            authorize_url(flow, state=state, scope="manage_notifications", **pkce), flow.redirect_uri
        )
        again = await user.authorize(authorize_url(flow, state=state, **pkce), flow.redirect_uri)
        for url in (allowed, denied, failed, again):
            assert query_of(url)["state"] == [state], url
        assert "code" in query_of(allowed) and "code" in query_of(again)
        assert query_of(denied)["error"] == ["access_denied"]
        assert query_of(failed)["error"] == ["invalid_scope"]
    # A NUL character cannot be kept with a code (PostgreSQL text): refused, back to the client, whether or
    # not the user still has to consent; never a server error.
    for scope in ("read_profile", "read_profile write_data"):
        refused = await user.authorize(authorize_url(flow, state="a\x00b", scope=scope, **pkce), flow.redirect_uri)
        query = query_of(refused)
        assert query["error"] == ["invalid_request"] and "code" not in query and query["iss"] == [ISSUER], refused


async def test_authorization_responses_carry_iss_and_no_tokens(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    """Every redirect back to the client names the issuer (RFC 9207); none carries a token (RFC 9700 §2.1.2)."""
    flow = await new_app(dev)
    user = await person(fresh=True)
    _, challenge = new_pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["issuer"] == ISSUER and metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["response_types_supported"] == ["code"]

    successes = [
        await user.authorize(authorize_url(flow, **pkce), flow.redirect_uri),  # sign-in + consent
        await user.authorize(authorize_url(flow, **pkce), flow.redirect_uri),  # already granted: straight back
        await user.authorize(authorize_url(flow, state=None, **pkce), flow.redirect_uri),  # no state
    ]
    errors = [
        await user.authorize(authorize_url(flow, scope="write_data", **pkce), flow.redirect_uri, decision="deny"),
        await user.authorize(authorize_url(flow, scope="no_such_permission", **pkce), flow.redirect_uri),
        await user.authorize(
            authorize_url(flow, response_type="token", **pkce), flow.redirect_uri
        ),  # implicit: refused
        await user.authorize(authorize_url(flow, response_type="code id_token", **pkce), flow.redirect_uri),
        await user.authorize(
            authorize_url(flow, code_challenge="short", code_challenge_method="S256"), flow.redirect_uri
        ),
    ]
    for url in successes:
        assert url.startswith(REGISTERED + "?") and "#" not in url, url
        query = query_of(url)
        assert set(query) <= {"code", "state", "iss"} and {"code", "iss"} <= set(query), url
        assert query["iss"] == [ISSUER]
        assert query["code"][0].count(".") != 2  # a code, not a JWT
    assert "state" not in query_of(successes[2])
    for url in errors:
        assert url.startswith(REGISTERED + "?") and "#" not in url, url
        query = query_of(url)
        assert set(query) <= {"error", "error_description", "state", "iss"}, url
        assert query["iss"] == [ISSUER] and query["state"] == ["st-1"]
    assert [query_of(u)["error"][0] for u in errors] == [
        "access_denied",
        "invalid_scope",
        "unsupported_response_type",
        "unsupported_response_type",
        "invalid_request",
    ]
    # No page nor redirect along the way put a token in a URL.
    for response in user.pages:
        for url in (str(response.request.url), response.headers.get("location", "")):
            assert "access_token" not in url and "refresh_token" not in url and "id_token=" not in url, url
    assert_pages_hardened(user.pages)


def assert_pages_hardened(pages: list[httpx.Response]) -> None:
    """RFC 9700 §4.12: redirects after a form post are 303, never 307 (which would re-post the password);
    §4.16: pages cannot be framed; §4.2.4: nothing leaks through Referer; nothing is cached."""
    assert pages
    for response in pages:
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        if 300 <= response.status_code < 400:
            assert response.status_code == 303, where
        else:
            csp = response.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp or response.headers.get("x-frame-options", "").upper() == "DENY", (
                where
            )
        assert response.headers.get("referrer-policy") == "no-referrer", where
        assert "no-store" in response.headers.get("cache-control", ""), where


async def test_sign_in_is_no_open_redirector(person: Person) -> None:
    """RFC 9700 §4.11: after signing in, ``next`` never sends the browser off the server."""
    user = await person(fresh=True)
    for next_value in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "http:evil.example",
        " https://evil.example",
        "/%2F%2Fevil.example",
    ]:
        page = await user.http.get("/signin?" + urlencode({"next": next_value}))
        assert page.status_code == 200, page.text
        form = next(f for f in parse_forms(page.text) if f.path(str(page.url)) == "/signin")
        data = [(k, {"email": user.email, "password": user.password}.get(k, v)) for k, v in form.inputs]
        response = await user.http.post(
            "/signin", content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        target = urlsplit(location)
        assert not target.scheme and not target.netloc and location.startswith("/") and not location.startswith("//"), (
            next_value,
            location,
        )
        assert "\\" not in location, (next_value, location)
        user.http.cookies.clear()


async def test_token_endpoint_takes_nothing_from_the_url(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    """Credentials and codes in the query string are not read (RFC 6749 §3.2, RFC 9700 §4.3)."""
    flow = await new_app(dev)
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    query = urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": REGISTERED,
            "client_id": flow.app_id,
            "client_secret": flow.key_secret,
        }
    )
    response = await client.post(
        f"/oauth2/token?{query}", content=b"", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_oauth_error(response)
    assert (await client.get(f"/oauth2/token?{query}")).status_code == 405
    # The code is still good for a proper request.
    tokens_of(
        await token(
            client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED, code_verifier=verifier
        )
    )  # type: ignore[arg-type]


# ---------------------------------------------------------------- client credentials


@pytest.mark.parametrize("auth", ["post", "basic"])
async def test_client_credentials_subject_is_the_app(client: httpx.AsyncClient, dev: Flow, auth: str) -> None:
    flow = await new_app(dev)
    body = tokens_of(await token(client, flow, auth, grant_type="client_credentials", scope="read_profile"))
    assert "refresh_token" not in body and body["scope"] == "read_profile"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == flow.app_id and claims["client_id"] == flow.app_id
    assert "user_id" not in claims
    info = await introspect(client, flow, body["access_token"])
    assert info["active"] is True and info["sub"] == flow.app_id and "user_id" not in info
    # Without scope: everything the app may ask for. Beyond it: invalid_scope.
    assert (
        tokens_of(await token(client, flow, auth, grant_type="client_credentials"))["scope"]
        == "read_profile write_data"
    )
    assert_oauth_error(
        await token(client, flow, auth, grant_type="client_credentials", scope="manage_notifications"), "invalid_scope"
    )
    assert_oauth_error(
        await token(client, flow, auth, grant_type="client_credentials", scope="nonsense"), "invalid_scope"
    )


# ---------------------------------------------------------------- the error shape, and no 500


def _unless_nul(value: str, error: str) -> str:
    """The error expected for a bad value; a NUL character anywhere is a malformed request first."""
    return "invalid_request" if "\x00" in value else error


async def _chunks(data: bytes, size: int = 16_384) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked transfer)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_every_form_endpoint_error_is_rfc6749_json(client: httpx.AsyncClient, dev: Flow, person: Person) -> None:
    flow = await new_app(dev)
    public = await new_app(dev, client_type="public")
    good = {"client_id": flow.app_id, "client_secret": flow.key_secret}
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    forged_at = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6WzFdfQ.e30.AAAA"  # typ at+jwt, kid a list
    garbage_tokens = ["", "x", "a.b.c", "e30.e30.", forged_at, "\x00", "é" * 10, "." * 3000]
    cases: list[tuple[str, Callable[[], Awaitable[httpx.Response]], str | None]] = []

    def case(name: str, error: str | None, make: Callable[[], Awaitable[httpx.Response]]) -> None:
        cases.append((name, make, error))

    for path in ("/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"):
        base = {"grant_type": "client_credentials"} if path == "/oauth2/token" else {"token": "x"}
        case(f"{path} no client", "invalid_client", lambda p=path, b=base: post_form(client, p, b))
        case(
            f"{path} wrong secret",
            "invalid_client",
            lambda p=path, b=base: post_form(
                client, p, {**b, "client_id": flow.app_id, "client_secret": flow.key_secret[:-2] + "xx"}
            ),
        )
        case(
            f"{path} foreign secret",
            "invalid_client",
            lambda p=path, b=base: post_form(client, p, {**b, "client_id": flow.app_id, "client_secret": "not-ours"}),
        )
        case(
            f"{path} secret of another app",
            "invalid_client",
            lambda p=path, b=base: post_form(
                client, p, {**b, "client_id": public.app_id, "client_secret": flow.key_secret}
            ),
        )
        case(
            f"{path} unknown client_id",
            "invalid_client",
            lambda p=path, b=base: post_form(client, p, {**b, "client_id": "nobody"}),
        )
        case(
            f"{path} confidential without secret",
            "invalid_client",
            lambda p=path, b=base: post_form(client, p, {**b, "client_id": flow.app_id}),
        )
        for header in [
            "Basic",
            "Basic ",
            "Basic !!!!",
            "Basic " + _b64(b"no-colon"),
            "Basic " + _b64(b"\xff\xfe:\xff"),
            "Basic " + _b64(b":"),
            "Basic " + _b64(f"{flow.app_id}:".encode()),
            "Basic " + _b64(b"a:b") + "=====",
            "Bearer " + flow.key_secret,
            "Digest x",
            "Basic " + "A" * 5000,
            "Basic é",
            "Basic \x7f",
            # NUL characters, raw or form-encoded (PostgreSQL text cannot hold them)
            "Basic " + _b64(b"a\x00b:"),
            "Basic " + _b64(b"a%00b:"),
            "Basic " + _b64(f"{public.app_id}%00:".encode()),
            "Basic " + _b64(f"{flow.app_id}:gks_0123456789abcde%00_x".encode()),
            "Basic " + _b64(f"{flow.app_id}:gks_0123456789abcde\x00_x".encode()),
        ]:
            case(
                f"{path} Authorization {header[:20]!r}",
                "invalid_client",
                lambda p=path, b=base, h=header: client.post(
                    p, content=urlencode(b), headers={**form_type, "Authorization": h.encode("latin-1")}
                ),
            )  # type: ignore[dict-item]
        case(
            f"{path} Basic and client_secret",
            "invalid_request",
            lambda p=path, b=base: post_form(client, p, {**b, **good}, basic(flow.app_id, flow.key_secret)),
        )
        case(
            f"{path} Basic and a different client_id",
            "invalid_client",
            lambda p=path, b=base: post_form(
                client, p, {**b, "client_id": public.app_id}, basic(flow.app_id, flow.key_secret)
            ),
        )
        case(f"{path} JSON body", "invalid_request", lambda p=path, b=base: client.post(p, json={**b, **good}))
        case(
            f"{path} no content type",
            "invalid_request",
            lambda p=path, b=base: client.post(p, content=urlencode({**b, **good})),
        )
        case(
            f"{path} multipart",
            "invalid_request",
            lambda p=path, b=base: client.post(p, files={"x": b"1"}, data={**b, **good}),
        )
        case(
            f"{path} repeated parameter",
            "invalid_request",
            lambda p=path, b=base: client.post(
                p, content=urlencode({**b, **good}) + "&" + urlencode(b), headers=form_type
            ),
        )
        case(
            f"{path} repeated client_id",
            "invalid_request",
            lambda p=path, b=base: client.post(p, content=urlencode({**b, **good}) + "&client_id=x", headers=form_type),
        )
        case(
            f"{path} parameter too long",
            "invalid_request",
            lambda p=path, b=base: post_form(client, p, {**b, **good, "x": "y" * 10_000}),
        )
        case(
            f"{path} huge body", None, lambda p=path: client.post(p, content=b"a=" + b"b" * 200_000, headers=form_type)
        )
        case(
            f"{path} huge chunked body",
            None,
            lambda p=path: client.post(p, content=_chunks(b"a=" + b"b" * 200_000), headers=form_type),
        )
        case(
            f"{path} not UTF-8",
            "invalid_request",
            lambda p=path: client.post(p, content=b"token=\xff\xfe&grant_type=\xc3", headers=form_type),
        )
        case(f"{path} wrong method", None, lambda p=path: client.get(p))
        case(f"{path} PUT", None, lambda p=path: client.put(p, content=b"", headers=form_type))
        if path != "/oauth2/token":
            case(f"{path} missing token", "invalid_request", lambda p=path: post_form(client, p, good))
            case(f"{path} empty token", "invalid_request", lambda p=path: post_form(client, p, {**good, "token": ""}))
    case(
        "introspect by a public client",
        "invalid_client",
        lambda: post_form(client, "/oauth2/introspect", {"token": "x", "client_id": public.app_id}),
    )

    t = "/oauth2/token"
    case("no grant_type", "invalid_request", lambda: post_form(client, t, good))
    for grant_type in (
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "AUTHORIZATION_CODE",
        "x" * 300,
        "\x00",
    ):
        case(
            f"grant_type {grant_type[:20]!r}",
            _unless_nul(grant_type, "unsupported_grant_type"),
            lambda g=grant_type: post_form(client, t, {**good, "grant_type": g}),
        )
    case("code missing", "invalid_request", lambda: post_form(client, t, {**good, "grant_type": "authorization_code"}))
    case(
        "refresh_token missing",
        "invalid_request",
        lambda: post_form(client, t, {**good, "grant_type": "refresh_token"}),
    )
    for value in garbage_tokens[1:]:
        case(
            f"code {value[:10]!r}",
            _unless_nul(value, "invalid_grant"),
            lambda v=value: post_form(client, t, {**good, "grant_type": "authorization_code", "code": v}),
        )
        case(
            f"refresh_token {value[:10]!r}",
            _unless_nul(value, "invalid_grant"),
            lambda v=value: post_form(client, t, {**good, "grant_type": "refresh_token", "refresh_token": v}),
        )
    case(
        "user token as code",
        "invalid_grant",
        lambda: post_form(client, t, {**good, "grant_type": "authorization_code", "code": flow.user_token}),
    )
    case(
        "scope with empty item",
        None,
        lambda: post_form(client, t, {**good, "grant_type": "client_credentials", "scope": "read_profile  write_data"}),
    )
    case(
        "scope of garbage",
        None,
        lambda: post_form(client, t, {**good, "grant_type": "client_credentials", "scope": "\x00 é <x>"}),
    )

    results = await asyncio.gather(*(make() for _, make, _ in cases))
    failures = []
    for (name, _, error), response in zip(cases, results, strict=True):
        try:
            body = assert_oauth_error(response, error)
            if name.endswith(("huge body", "huge chunked body")):
                assert response.status_code == 413 and body["error"] == "invalid_request"
        except (AssertionError, json.JSONDecodeError, KeyError) as exc:
            failures.append(
                f"{name}: {response.status_code} {response.headers.get('content-type')} {response.text[:200]} ({exc})"
            )
    assert not failures, "\n".join(failures)

    # Garbage tokens at revocation and introspection are not errors: 200, and inactive (RFC 7009 §2.2, RFC 7662 §2.2).
    # (A NUL character is a malformed request rather than a bad token: 400 invalid_request, above.)
    for value in [*garbage_tokens[1:], flow.user_token, flow.app_key, flow.key_secret]:
        revoke = await post_form(
            client,
            "/oauth2/revoke",
            {"token": value, "token_type_hint": "refresh_token"},
            basic(flow.app_id, flow.key_secret),
        )
        if "\x00" in value:
            assert_oauth_error(revoke, "invalid_request", 400)
            continue
        assert revoke.status_code == 200, (value[:20], revoke.text)
        assert await introspect(client, flow, value) == {"active": False}, value[:20]


# ---------------------------------------------------------------- one code store, two dialects


async def test_neucron_code_redeems_at_the_standard_token_endpoint(client: httpx.AsyncClient, dev: Flow) -> None:
    flow = await new_app(dev)
    code = await flow.code(permissions="read_profile,write_data")
    body = tokens_of(
        await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)
    )
    assert body["scope"] == "read_profile write_data" and body["refresh_token"]
    claims = claims_of(body["access_token"])
    assert claims["sub"] == flow.user_id and claims["user_id"] == flow.user_id and claims["client_id"] == flow.app_id
    assert (await introspect(client, flow, body["access_token"]))["active"] is True
    # Single use across dialects: the Neucron endpoint now refuses it too, and the reuse revokes.
    again = await flow.redeem(code)
    assert again.status_code == 401 and again.json()["error"] == "invalid_grant", again.text
    assert await introspect(client, flow, body["access_token"]) == {"active": False}


async def test_standard_code_without_pkce_redeems_at_the_neucron_token_endpoint(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow = await new_app(dev)
    user = await person()
    code, _ = await code_by_pages(user, flow, pkce=False)
    response = await flow.redeem(code)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    claims = claims_of(data["access_token"])
    assert claims["sub"] == user.user_id and claims["client_id"] == flow.app_id
    assert data["scope"] == "read_profile"
    assert (await introspect(client, flow, data["access_token"]))["active"] is True
    # Single use across dialects.
    assert_oauth_error(
        await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=REGISTERED), "invalid_grant"
    )


async def test_pkce_bound_code_cannot_be_redeemed_at_the_neucron_token_endpoint(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    """The Neucron dialect has no code_verifier: a code bound to a challenge must not slip through it."""
    flow = await new_app(dev)
    user = await person()
    code, verifier = await code_by_pages(user, flow)
    response = await flow.redeem(code)
    assert response.status_code in (400, 401) and response.json()["error"] == "invalid_grant", response.text
    assert verifier
