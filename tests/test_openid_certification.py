"""The OpenID Foundation's basic OP certification plan (``oidcc-basic-certification-test-plan``,
static client, discovery, response_type=code), mirrored module by module on the in-process app.

Each test is named after the module it mirrors and checks what the module checks (its summary in
the conformance suite, net.openid.conformance.openid.OIDCC*): the user's side on the hosted pages
over HTTP (ActingUser), the relying party's side by hand, the ID token verified against the
published JWKS as a relying party does (whatever its algorithm). Modules, in the plan's order:

- oidcc-server: the happy flow: discovery, code, token response, ID token (iss, aud, sub, exp, iat,
  nonce, kid, signature), UserInfo.
- oidcc-response-type-missing: no response_type: an error (invalid_request or
  unsupported_response_type) back at the redirect URI, never a code.
- oidcc-userinfo-get, oidcc-userinfo-post-header, oidcc-userinfo-post-body: UserInfo each way,
  the ID token's sub.
- oidcc-ensure-request-without-nonce-succeeds-for-code-flow: nonce is optional in the code flow.
- oidcc-scope-profile, oidcc-scope-email, oidcc-scope-phone: the scope's claims at UserInfo.
- oidcc-scope-address: not supported. ``address`` is not in scopes_supported, which is the suite's
  condition to skip the module; asked anyway, grantd answers invalid_scope at the redirect URI.
- oidcc-scope-all: skipped by the suite for the same reason (it asks for address); mirrored with
  every supported scope: openid profile email phone.
- oidcc-ensure-other-scope-order-succeeds: openid need not come first.
- oidcc-alternate-happy-flow: the happy flow with a second client (client_secret_post).
- oidcc-display-page, oidcc-display-popup: display is accepted (and ignored: one page layout).
- oidcc-prompt-login: a second sign-in though signed in; a newer auth_time.
- oidcc-prompt-none-not-logged-in: login_required at the redirect URI.
- oidcc-prompt-none-logged-in: a code without any page, the same sub.
- oidcc-max-age-1: a sign-in older than a second is asked again; a newer auth_time.
- oidcc-max-age-10000: no second sign-in; auth_time present.
- oidcc-ensure-request-with-unknown-parameter-succeeds.
- oidcc-id-token-hint: prompt=none with the ID token as hint: a code, the same sub.
- oidcc-login-hint: the sign-in page starts with the hinted email.
- oidcc-ui-locales, oidcc-claims-locales, oidcc-ensure-request-with-acr-values-succeeds: accepted.
- oidcc-codereuse, oidcc-codereuse-30seconds: the second redemption is refused and the first
  access token revoked (UserInfo refuses it), at once and 30 seconds later.
- oidcc-ensure-registered-redirect-uri: an unregistered redirect_uri: an error page, no redirect.
- oidcc-ensure-post-request-succeeds: the authorization request by POST (Core §3.1.2.1: MUST),
  which grantd sends on as the same request by GET.
- oidcc-server-client-secret-post: the happy flow with client_secret_post.
- oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported: discovery says
  request_parameter_supported false; an unsigned request object gets request_not_supported.
- oidcc-claims-essential: the claims parameter is not supported (claims_parameter_supported
  false): the request succeeds, and ``name`` is not released without the profile scope (the suite
  warns, it does not fail).
- oidcc-ensure-request-object-with-redirect-uri: redirect_uri only in a request object: an
  error page (the request lacks redirect_uri), never a redirect.
- oidcc-refresh-token: a refresh returns an ID token with the same iss, sub, aud and auth_time;
  the refresh token is refused to another client.
- oidcc-ensure-request-with-valid-pkce-succeeds.

From older versions of the plan and the comprehensive oidcc-test-plan, where they apply:
oidcc-ensure-redirect-uri-in-authorization-request (no redirect_uri: an error page, whether the
app registered two redirect URIs or one), and grantd's own PKCE rule for public clients.

Not applicable (modules of other plans or variants, named for completeness): the dynamic client
plan's oidcc-registration-*, oidcc-redirect-uri-query-*, oidcc-redirect-uri-regfrag,
oidcc-idtoken-unsigned, oidcc-request-uri-*, oidcc-refresh-token-rp-key-rotation and
oidcc-registration-sector-bad (grantd has no dynamic registration yet, #12); the implicit and
hybrid plans (response_type code only); oidcc-ensure-request-without-nonce-fails (implicit and
hybrid only; the app setting require_nonce is grantd's own, tested in tests/test_openid_connect.py
once /v1/apps sets it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from acting_user import ActingUser, parse_forms
from support.neucron import PASSWORD
from test_openid_connect import (  # the relying party's helpers, and its fixtures rp, person, browser
    ISSUER,
    REDIRECT_URI,
    RelyingParty,
    answer,
    at_hash,
    authorization_url,
    browser,
    new_rp,
    person,
    redeem,
    rp,
    verified,
)

pytestmark = pytest.mark.db

__all__ = ["browser", "person", "rp"]  # fixtures, imported to be used here


async def authorized(browser: httpx.AsyncClient, rp: RelyingParty, email: str, **params: str) -> tuple[dict[str, str], str, ActingUser]:
    """The user's answer to an authorization request (signing in and consenting as asked), its PKCE
    verifier, and the user (``pages``: what they were shown)."""
    path, verifier = authorization_url(rp, **params)
    user = ActingUser(browser, email, PASSWORD)
    got = answer(await user.authorize(ISSUER + path, REDIRECT_URI))
    assert got["iss"] == ISSUER  # RFC 9207, on every answer
    return got, verifier, user


async def tokens_of(
    browser: httpx.AsyncClient, api: httpx.AsyncClient, rp: RelyingParty, email: str, **params: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A code flow to its end: the token response and the ID token's verified claims."""
    params.setdefault("nonce", secrets.token_urlsafe(16))
    got, verifier, _ = await authorized(browser, rp, email, **params)
    response = await redeem(api, rp, got["code"], verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    claims = await verified(api, tokens["id_token"], rp.client_id)
    assert claims.get("nonce") == params["nonce"]
    return tokens, claims


async def userinfo(api: httpx.AsyncClient, access_token: str) -> dict[str, Any]:
    response = await api.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    return response.json()


def signins(user: ActingUser) -> int:
    """How many times the user was shown the sign-in page (the suite asks for its screenshot)."""
    return sum(1 for page in user.pages if page.status_code == 200 and any(f.action == "/signin" for f in parse_forms(page.text)))


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


# ---------------------------------------------------------------- oidcc-server and the token response


async def test_oidcc_server(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    user_id, email = person
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == ISSUER
    assert "code" in document["response_types_supported"]
    assert (await client.get(document["jwks_uri"].removeprefix(ISSUER))).status_code == 200
    nonce = secrets.token_urlsafe(16)
    got, verifier, _ = await authorized(browser, rp, email, nonce=nonce)
    response = await redeem(client, rp, got["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"].lower() == "bearer" and tokens["expires_in"] > 0
    header = jwt.get_unverified_header(tokens["id_token"])
    assert header["alg"] in document["id_token_signing_alg_values_supported"] and header["alg"] != "none"
    assert header.get("kid")
    claims = await verified(client, tokens["id_token"], rp.client_id)
    assert claims["iss"] == ISSUER and claims["aud"] in (rp.client_id, [rp.client_id])
    assert claims["sub"] == user_id and 0 < len(claims["sub"]) <= 255
    assert claims["nonce"] == nonce and claims["exp"] > claims["iat"]
    assert abs(claims["iat"] - int(__import__("time").time())) < 300
    assert claims.get("azp", rp.client_id) == rp.client_id
    assert claims["at_hash"] == at_hash(tokens["access_token"])
    assert (await userinfo(client, tokens["access_token"]))["sub"] == claims["sub"]


async def test_oidcc_response_type_missing(browser: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    path, _ = authorization_url(rp, state="rtm")
    path = path.replace("response_type=code&", "")
    assert "response_type" not in path
    response = await browser.get(path)
    assert response.status_code == 303
    got = answer(response.headers["location"])
    assert got["error"] in ("invalid_request", "unsupported_response_type") and "code" not in got
    assert got["state"] == "rtm" and got["iss"] == ISSUER


# ---------------------------------------------------------------- UserInfo


@pytest.mark.parametrize("module", ["oidcc-userinfo-get", "oidcc-userinfo-post-header", "oidcc-userinfo-post-body"])
async def test_oidcc_userinfo(
    module: str, browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    tokens, claims = await tokens_of(browser, client, rp, email)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    if module == "oidcc-userinfo-get":
        response = await client.get("/oauth2/userinfo", headers=bearer)
    elif module == "oidcc-userinfo-post-header":
        response = await client.post("/oauth2/userinfo", headers=bearer)
    else:
        response = await client.post("/oauth2/userinfo", data={"access_token": tokens["access_token"]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["sub"] == claims["sub"]


async def test_oidcc_ensure_request_without_nonce_succeeds_for_code_flow(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    got, verifier, _ = await authorized(browser, rp, email)  # no nonce
    response = await redeem(client, rp, got["code"], verifier)
    assert response.status_code == 200, response.text
    claims = await verified(client, response.json()["id_token"], rp.client_id)
    assert "nonce" not in claims


# ---------------------------------------------------------------- scopes

PROFILE = {"name", "given_name", "family_name", "preferred_username", "updated_at"}  # those the person set
EMAIL = {"email", "email_verified"}
PHONE = {"phone_number"}


@pytest.mark.parametrize(
    ("module", "scope", "expected"),
    [
        ("oidcc-scope-profile", "openid profile", PROFILE),
        ("oidcc-scope-email", "openid email", EMAIL),
        ("oidcc-scope-phone", "openid phone", PHONE),
        ("oidcc-scope-all (without address)", "openid profile email phone", PROFILE | EMAIL | PHONE),
        ("oidcc-ensure-other-scope-order-succeeds", "email openid", EMAIL),
    ],
)
async def test_oidcc_scope(
    module: str, scope: str, expected: set[str],
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str],
) -> None:
    _, email = person
    tokens, _ = await tokens_of(browser, client, rp, email, scope=scope)
    assert set(tokens["scope"].split()) == set(scope.split())
    released = set(await userinfo(client, tokens["access_token"])) - {"sub"}
    assert released == expected, module


async def test_oidcc_scope_address_is_not_supported(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    """The suite skips oidcc-scope-address and oidcc-scope-all when scopes_supported lacks address."""
    _, email = person
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert "address" not in document["scopes_supported"] and "address" not in document["claims_supported"]
    await tokens_of(browser, client, rp, email)  # signed in and consented to openid
    path, _ = authorization_url(rp, scope="openid address", state="addr")
    got = answer((await browser.get(path)).headers["location"])
    assert got["error"] == "invalid_scope" and got["state"] == "addr" and "code" not in got


async def test_oidcc_alternate_happy_flow_and_server_client_secret_post(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    user_id, email = person
    second = await new_rp(client, name="Second Relying Party")
    for app in (rp, second):
        got, verifier, _ = await authorized(browser, app, email, nonce="n-" + app.client_id)
        response = await client.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code", "code": got["code"], "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier, "client_id": app.client_id, "client_secret": app.secret,
            },
        )
        assert response.status_code == 200, response.text
        claims = await verified(client, response.json()["id_token"], app.client_id)
        assert claims["sub"] == user_id and claims["nonce"] == "n-" + app.client_id


# ---------------------------------------------------------------- the authorization request's parameters


@pytest.mark.parametrize(
    ("module", "params"),
    [
        ("oidcc-display-page", {"display": "page"}),
        ("oidcc-display-popup", {"display": "popup"}),
        ("oidcc-ensure-request-with-unknown-parameter-succeeds", {"extra": "foobar"}),
        ("oidcc-ui-locales", {"ui_locales": "se"}),
        ("oidcc-claims-locales", {"claims_locales": "se"}),
        ("oidcc-ensure-request-with-acr-values-succeeds", {"acr_values": "1 2"}),
    ],
)
async def test_oidcc_accepted_parameters(
    module: str, params: dict[str, str],
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str],
) -> None:
    user_id, email = person
    _, claims = await tokens_of(browser, client, rp, email, **params)
    assert claims["sub"] == user_id, module
    assert "acr" not in claims  # none is asserted: acr_values were voluntary


async def test_oidcc_prompt_login(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    _, first = await tokens_of(browser, client, rp, email)
    await asyncio.sleep(1.1)
    nonce = secrets.token_urlsafe(8)
    got, verifier, user = await authorized(browser, rp, email, prompt="login", nonce=nonce)
    assert signins(user) == 1  # the second login, though signed in
    response = await redeem(client, rp, got["code"], verifier)
    second = await verified(client, response.json()["id_token"], rp.client_id)
    assert second["sub"] == first["sub"] and second["auth_time"] > first["auth_time"]


async def test_oidcc_prompt_none_not_logged_in(browser: httpx.AsyncClient, rp: RelyingParty) -> None:
    path, _ = authorization_url(rp, prompt="none", state="pn")
    response = await browser.get(path)
    assert response.status_code == 303
    got = answer(response.headers["location"])
    assert got["error"] == "login_required" and got["state"] == "pn" and got["iss"] == ISSUER


async def test_oidcc_prompt_none_logged_in(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    _, first = await tokens_of(browser, client, rp, email)
    path, verifier = authorization_url(rp, prompt="none", nonce="silent")
    response = await browser.get(path)
    assert response.status_code == 303  # no page at all
    got = answer(response.headers["location"])
    tokens = (await redeem(client, rp, got["code"], verifier)).json()
    claims = await verified(client, tokens["id_token"], rp.client_id)
    assert claims["sub"] == first["sub"] and claims["nonce"] == "silent"


async def test_oidcc_max_age_1(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    _, first = await tokens_of(browser, client, rp, email)
    await asyncio.sleep(2.1)  # auth_time is in whole seconds: older than max_age=1 for certain
    got, verifier, user = await authorized(browser, rp, email, max_age="1")
    assert signins(user) == 1
    tokens = (await redeem(client, rp, got["code"], verifier)).json()
    claims = await verified(client, tokens["id_token"], rp.client_id)
    assert claims["auth_time"] > first["auth_time"]


async def test_oidcc_max_age_10000(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    _, first = await tokens_of(browser, client, rp, email)
    got, verifier, user = await authorized(browser, rp, email, max_age="10000")
    assert signins(user) == 0
    tokens = (await redeem(client, rp, got["code"], verifier)).json()
    claims = await verified(client, tokens["id_token"], rp.client_id)
    assert claims["auth_time"] == first["auth_time"]


async def test_oidcc_id_token_hint(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    tokens, first = await tokens_of(browser, client, rp, email)
    path, verifier = authorization_url(rp, prompt="none", id_token_hint=tokens["id_token"])
    got = answer((await browser.get(path)).headers["location"])
    again = (await redeem(client, rp, got["code"], verifier)).json()
    assert (await verified(client, again["id_token"], rp.client_id))["sub"] == first["sub"]


async def test_oidcc_login_hint(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    got, verifier, user = await authorized(browser, rp, email, login_hint=email)
    signin_page = next(page for page in user.pages if page.status_code == 200 and "/signin" in page.text)
    form = next(f for f in parse_forms(signin_page.text) if f.action == "/signin")
    assert dict(form.inputs)["email"] == email
    assert (await redeem(client, rp, got["code"], verifier)).status_code == 200


# ---------------------------------------------------------------- codes and redirect URIs


@pytest.mark.parametrize("wait", [0, 30], ids=["oidcc-codereuse", "oidcc-codereuse-30seconds"])
async def test_oidcc_codereuse(
    wait: int, app: Any, browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    got, verifier, _ = await authorized(browser, rp, email)
    first = await redeem(client, rp, got["code"], verifier)
    assert first.status_code == 200, first.text
    access_token = first.json()["access_token"]
    assert (await userinfo(client, access_token))["sub"]
    ctx = app.state.ctx
    if wait:
        now = ctx.now()
        ctx.now = lambda: now + wait  # the clock, 30 seconds on (the code's lifetime is longer)
    try:
        again = await redeem(client, rp, got["code"], verifier)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        revoked = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
        assert revoked.status_code == 401
    finally:
        if wait:
            del ctx.now


async def test_oidcc_ensure_registered_redirect_uri(browser: httpx.AsyncClient, rp: RelyingParty) -> None:
    path, _ = authorization_url(rp, redirect_uri="https://rp.example.com/unregistered")
    response = await browser.get(path)
    assert response.status_code == 400 and "location" not in response.headers
    assert "redirect_uri is not registered" in response.text


async def test_oidcc_ensure_redirect_uri_in_authorization_request(browser: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    two = await new_rp(client, redirect_uris=[REDIRECT_URI, "https://rp.example.com/other"])
    path, _ = authorization_url(two)
    path = path.replace("redirect_uri=" + REDIRECT_URI.replace(":", "%3A").replace("/", "%2F") + "&", "")
    assert "redirect_uri" not in path
    response = await browser.get(path)
    assert response.status_code == 400 and "location" not in response.headers
    # Core §3.1.2.1: REQUIRED in an OpenID request, even of an app with one redirect URI.
    one = await new_rp(client)
    path, _ = authorization_url(one, state="no-redirect-uri")
    path = path.replace("redirect_uri=" + REDIRECT_URI.replace(":", "%3A").replace("/", "%2F") + "&", "")
    response = await browser.get(path)
    assert response.status_code == 400 and "location" not in response.headers
    assert "redirect_uri is required" in response.text


async def test_oidcc_ensure_post_request_succeeds(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    """Core §3.1.2.1: the authorization endpoint MUST support POST (the parameters form-encoded).
    grantd sends a POSTed request on as the same request by GET (see tests/browser/test_openid.py
    for why), which the user's browser follows."""
    _, email = person
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    path, _ = authorization_url(rp, state="post")
    to_get = await browser.post("/oauth2/authorize", content=path.split("?", 1)[1], headers=form)
    assert to_get.status_code == 303 and to_get.headers["location"].startswith("/oauth2/authorize?")
    to_signin = await browser.get(to_get.headers["location"])
    assert to_signin.status_code == 303 and to_signin.headers["location"].startswith("/signin?next=%2Foauth2%2Fauthorize%3F")
    await tokens_of(browser, client, rp, email)  # signed in, consented
    path, verifier = authorization_url(rp, nonce="by-post", state="post")
    to_get = await browser.post("/oauth2/authorize", content=path.split("?", 1)[1], headers=form)
    response = await browser.get(to_get.headers["location"])
    assert response.status_code == 303, response.text
    got = answer(response.headers["location"])
    assert got["state"] == "post"
    tokens = (await redeem(client, rp, got["code"], verifier)).json()
    assert (await verified(client, tokens["id_token"], rp.client_id))["nonce"] == "by-post"


# ---------------------------------------------------------------- request objects and the claims parameter


async def test_oidcc_unsigned_request_object_rejected_as_unsupported(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty
) -> None:
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert document["request_parameter_supported"] is False
    request = unsigned_jwt({"client_id": rp.client_id, "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT_URI})
    path, _ = authorization_url(rp, request=request, state="ro")
    got = answer((await browser.get(path)).headers["location"])
    assert got["error"] == "request_not_supported" and got["state"] == "ro" and "code" not in got


async def test_oidcc_ensure_request_object_with_redirect_uri(browser: httpx.AsyncClient, rp: RelyingParty) -> None:
    request = unsigned_jwt({"client_id": rp.client_id, "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT_URI})
    query = {"client_id": rp.client_id, "response_type": "code", "scope": "openid", "request": request, "state": "rq"}
    response = await browser.get("/oauth2/authorize?" + urlencode(query))
    # An error page (redirect_uri is missing from the request itself), never a redirect.
    assert response.status_code == 400 and "location" not in response.headers


async def test_oidcc_claims_essential(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert document["claims_parameter_supported"] is False
    claims_request = json.dumps({"userinfo": {"name": {"essential": True}}})
    tokens, _ = await tokens_of(browser, client, rp, email, claims=claims_request)
    assert set(await userinfo(client, tokens["access_token"])) == {"sub"}  # openid alone releases sub only


# ---------------------------------------------------------------- refresh and PKCE


async def test_oidcc_refresh_token(browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]) -> None:
    _, email = person
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert "offline_access" in document["scopes_supported"] and "refresh_token" in document["grant_types_supported"]
    tokens, first = await tokens_of(browser, client, rp, email, scope="openid offline_access", prompt="consent")
    other = await new_rp(client, name="Another Relying Party")
    stolen = await client.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=(other.client_id, other.secret)
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    await asyncio.sleep(1.1)
    response = await client.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=(rp.client_id, rp.secret)
    )
    assert response.status_code == 200, response.text
    refreshed = response.json()
    claims = await verified(client, refreshed["id_token"], rp.client_id)  # Core §12.2
    assert (claims["iss"], claims["sub"], claims["aud"]) == (first["iss"], first["sub"], first["aud"])
    assert claims["iat"] > first["iat"] and claims["auth_time"] == first["auth_time"]
    assert (await userinfo(client, refreshed["access_token"]))["sub"] == first["sub"]


async def test_oidcc_ensure_request_with_valid_pkce_succeeds(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    got, verifier, _ = await authorized(browser, rp, email)  # S256 (authorization_url)
    wrong = await redeem(client, rp, got["code"], secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # grantd's own rule: a public client must send PKCE.
    public = await new_rp(client, client_type="public", name="Public Relying Party")
    path, _ = authorization_url(public, state="nopkce")
    path = path.split("&code_challenge=")[0]
    got_public = answer((await browser.get(path)).headers["location"])
    assert got_public["error"] == "invalid_request" and "PKCE" in got_public["error_description"]
