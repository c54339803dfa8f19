"""OpenID Connect on the in-process app: discovery, the ID token, UserInfo, the authorization
request's OpenID parameters (prompt, max_age, id_token_hint, login_hint, response_mode), refresh,
offline_access and RP-initiated logout, each checked as a relying party would check it.

The ID token is verified with PyJWT against the JWKS the server publishes, as a relying party
does (Core §3.1.3.7); independent relying-party libraries run against a real server in
tests/test_interop_openid.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from acting_user import ActingUser, parse_forms
from support.neucron import PASSWORD, sign_up, unique_email

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
REDIRECT_URI = "https://rp.example.com/callback"
LOGGED_OUT_URI = "https://rp.example.com/signed-out"


@dataclass
class RelyingParty:
    client_id: str
    secret: str
    dev_token: str


async def new_rp(api: httpx.AsyncClient, **fields: Any) -> RelyingParty:
    _, dev_token = await sign_up(api)
    body = {"name": "Relying Party", "redirect_uris": [REDIRECT_URI], "permissions": "read_profile", **fields}
    response = await api.post("/v1/apps", json=body, headers={"Authorization": dev_token})
    assert response.status_code == 200, response.text
    client_id = response.json()["data"]["app_id"]
    response = await api.post(f"/v1/apps/{client_id}/keys", headers={"Authorization": dev_token})
    assert response.status_code == 200, response.text
    return RelyingParty(client_id, response.json()["data"]["key_secret"], dev_token)


@pytest.fixture
async def rp(client: httpx.AsyncClient) -> RelyingParty:
    return await new_rp(client)


@pytest.fixture
async def person(client: httpx.AsyncClient) -> tuple[str, str]:
    """(user_id, email) with a profile: names, a user name, a phone number."""
    email = unique_email()
    user_id, token = await sign_up(client, email)
    response = await client.put(
        "/auth/user/update",
        json={"first_name": "Ada", "last_name": "Lovelace", "user_name": f"ada{secrets.token_hex(4)}", "phone_number": "+14155550123"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return user_id, email


@pytest.fixture
async def browser(app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as b:
        yield b


def authorization_url(rp: RelyingParty, **params: str) -> tuple[str, str]:
    """The authorization request's path and its PKCE verifier."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code", "client_id": rp.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "st-" + secrets.token_hex(4), "code_challenge": challenge, "code_challenge_method": "S256", **params,
    }
    return "/oauth2/authorize?" + urlencode(query), verifier


def answer(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT_URI + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def code_flow(
    browser: httpx.AsyncClient, api: httpx.AsyncClient, rp: RelyingParty, email: str, **params: str
) -> tuple[dict[str, Any], str]:
    """Sign in and allow on the pages, redeem the code: the token response, and the nonce sent."""
    nonce = params.pop("nonce", None) or secrets.token_urlsafe(16)
    path, verifier = authorization_url(rp, nonce=nonce, **params)
    location = await ActingUser(browser, email, PASSWORD).authorize(ISSUER + path, REDIRECT_URI)
    got = answer(location)
    assert got["iss"] == ISSUER
    response = await redeem(api, rp, got["code"], verifier)
    assert response.status_code == 200, response.text
    return response.json(), nonce


async def redeem(api: httpx.AsyncClient, rp: RelyingParty, code: str, verifier: str) -> httpx.Response:
    return await api.post(
        "/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
        auth=(rp.client_id, rp.secret),
    )


async def verified(api: httpx.AsyncClient, id_token: str, audience: str) -> dict[str, Any]:
    """Core §3.1.3.7, as a relying party checks an ID token: signature by a key of the published
    JWKS, iss, aud, exp, iat."""
    jwks = (await api.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] in ("RS256", "ES256")
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(key).key
    return jwt.decode(id_token, public, algorithms=[header["alg"]], audience=audience, issuer=ISSUER)


def at_hash(access_token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()[:16]).rstrip(b"=").decode()


# ---------------------------------------------------------------- discovery


async def test_discovery_is_one_document_with_every_required_field(client: httpx.AsyncClient) -> None:
    openid = await client.get("/.well-known/openid-configuration")
    oauth = await client.get("/.well-known/oauth-authorization-server")
    assert openid.status_code == oauth.status_code == 200
    document = openid.json()
    assert document == oauth.json()
    required = {
        "issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
        "subject_types_supported", "id_token_signing_alg_values_supported",
    }
    recommended = {"userinfo_endpoint", "scopes_supported", "claims_supported"}
    assert required | recommended <= set(document)
    assert document["issuer"] == ISSUER
    assert document["userinfo_endpoint"] == ISSUER + "/oauth2/userinfo"
    assert document["end_session_endpoint"] == ISSUER + "/oauth2/logout"
    assert {"RS256", "ES256"} <= set(document["id_token_signing_alg_values_supported"])
    assert set(document["subject_types_supported"]) == {"public", "pairwise"}
    assert {"openid", "profile", "email", "phone", "offline_access", "read_profile"} <= set(document["scopes_supported"])
    assert {"sub", "name", "email", "email_verified", "phone_number", "updated_at", "auth_time", "nonce"} <= set(document["claims_supported"])
    assert document["response_modes_supported"] == ["query", "form_post"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["request_parameter_supported"] is False
    assert "token id_token" not in document["response_types_supported"]


# ---------------------------------------------------------------- the ID token and UserInfo


async def test_code_flow_returns_an_id_token_a_relying_party_accepts(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    user_id, email = person
    tokens, nonce = await code_flow(browser, client, rp, email, scope="openid profile email")
    claims = await verified(client, tokens["id_token"], rp.client_id)
    assert claims["sub"] == user_id and claims["sub"] != email
    assert claims["nonce"] == nonce
    assert claims["at_hash"] == at_hash(tokens["access_token"])
    assert claims["amr"] == ["pwd"]
    assert claims["iat"] - 60 < claims["auth_time"] <= claims["iat"]
    assert claims["exp"] > claims["iat"]
    assert claims["given_name"] == "Ada" and claims["family_name"] == "Lovelace" and claims["name"] == "Ada Lovelace"
    assert claims["email"] == email and claims["email_verified"] is False
    assert "phone_number" not in claims  # phone was not asked for
    assert set(tokens["scope"].split()) == {"openid", "profile", "email"}


async def test_userinfo_answers_the_granted_claims_by_header_and_by_form(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    user_id, email = person
    tokens, _ = await code_flow(browser, client, rp, email, scope="openid phone")
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    by_get = await client.get("/oauth2/userinfo", headers=bearer)
    by_post = await client.post("/oauth2/userinfo", headers=bearer)
    by_form = await client.post("/oauth2/userinfo", data={"access_token": tokens["access_token"]})
    for response in (by_get, by_post, by_form):
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.json() == {"sub": user_id, "phone_number": "+14155550123"}
    id_claims = await verified(client, tokens["id_token"], rp.client_id)
    assert id_claims["sub"] == by_get.json()["sub"]


async def test_userinfo_refusals_follow_rfc_6750(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    bare = await client.get("/oauth2/userinfo")
    # Both schemes it takes (RFC 9449 §7.1: DPoP names its proof algorithms).
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == 'Bearer realm="grantd", DPoP algs="ES256 EdDSA RS256 PS256"'
    forged = await client.get("/oauth2/userinfo", headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]
    assert forged.json()["error"] == "invalid_token"
    in_query = await client.get("/oauth2/userinfo", params={"access_token": "x"})
    assert in_query.status_code == 400 and in_query.json()["error"] == "invalid_request"
    # A token of the user without openid: the scope is missing, not the token.
    tokens, _ = await code_flow(browser, client, rp, email, scope="read_profile")
    assert "id_token" not in tokens
    plain = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert plain.status_code == 403
    assert 'error="insufficient_scope"' in plain.headers["www-authenticate"] and 'scope="openid"' in plain.headers["www-authenticate"]
    both = await client.post(
        "/oauth2/userinfo", data={"access_token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert both.status_code == 400
    # A revoked token is no longer anyone's.
    openid_tokens, _ = await code_flow(browser, client, rp, email)
    revoked = await client.post("/oauth2/revoke", data={"token": openid_tokens["access_token"]}, auth=(rp.client_id, rp.secret))
    assert revoked.status_code == 200
    after = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {openid_tokens['access_token']}"})
    assert after.status_code == 401


async def test_client_credentials_cannot_ask_for_openid(client: httpx.AsyncClient, rp: RelyingParty) -> None:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "openid"}, auth=(rp.client_id, rp.secret)
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


async def test_refresh_returns_a_new_id_token_with_the_original_auth_time_and_no_nonce(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    tokens, _ = await code_flow(browser, client, rp, email, scope="openid offline_access")
    first = await verified(client, tokens["id_token"], rp.client_id)
    response = await client.post(
        "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=(rp.client_id, rp.secret)
    )
    assert response.status_code == 200, response.text
    refreshed = response.json()
    again = await verified(client, refreshed["id_token"], rp.client_id)
    assert again["sub"] == first["sub"] and again["aud"] == first["aud"] and again["iss"] == first["iss"]
    assert again["auth_time"] == first["auth_time"]
    assert "nonce" not in again
    assert again["at_hash"] == at_hash(refreshed["access_token"])


# ---------------------------------------------------------------- the authorization request


async def signed_in(browser: httpx.AsyncClient, email: str) -> None:
    page = await browser.get("/signin")
    form = next(f for f in parse_forms(page.text) if f.action == "/signin")
    data = {**dict(form.inputs), "email": email, "password": PASSWORD}
    response = await browser.post("/signin", data=data)
    assert response.status_code == 303, response.text


async def test_prompt_none_answers_at_the_redirect_uri(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    path, _ = authorization_url(rp, prompt="none", state="s1")
    no_session = await browser.get(path)
    assert no_session.status_code == 303
    got = answer(no_session.headers["location"])
    assert got["error"] == "login_required" and got["state"] == "s1" and got["iss"] == ISSUER
    await signed_in(browser, email)
    not_yet = answer((await browser.get(path)).headers["location"])
    assert not_yet["error"] == "consent_required"
    await code_flow(browser, client, rp, email)  # consent to openid
    path, verifier = authorization_url(rp, prompt="none")
    silent = answer((await browser.get(path)).headers["location"])
    assert "code" in silent
    assert (await redeem(client, rp, silent["code"], verifier)).status_code == 200


async def test_prompt_login_and_max_age_ask_to_sign_in_again(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    await code_flow(browser, client, rp, email)
    for params in ({"prompt": "login"}, {"max_age": "0"}):
        path, _ = authorization_url(rp, **params)
        if "max_age" in params:
            await asyncio.sleep(1.1)  # the session is now older than max_age
        response = await browser.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/signin?"), response.headers
        # Signed in again, the request goes on without asking again (no loop).
        location = await ActingUser(browser, email, PASSWORD).authorize(ISSUER + response.headers["location"], REDIRECT_URI)
        assert "code" in answer(location)
    bad = answer((await browser.get(authorization_url(rp, max_age="soon")[0])).headers["location"])
    assert bad["error"] == "invalid_request"


async def test_prompt_consent_asks_again_and_unknown_parameters_are_ignored(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    await code_flow(browser, client, rp, email, scope="openid profile")
    path, _ = authorization_url(rp, scope="openid profile", prompt="consent", display="page", foo="bar")
    page = await browser.get(path)
    assert page.status_code == 200
    assert "See your name, user name, profile picture and language" in page.text
    assert "Sign you in to the app" in page.text
    refused = answer((await browser.get(authorization_url(rp, request="eyJ.x.y")[0])).headers["location"])
    assert refused["error"] == "request_not_supported"
    combined = answer((await browser.get(authorization_url(rp, prompt="none login")[0])).headers["location"])
    assert combined["error"] == "invalid_request"


async def test_login_hint_fills_in_the_email(browser: httpx.AsyncClient, rp: RelyingParty) -> None:
    path, _ = authorization_url(rp, login_hint="ada@example.com")
    to_signin = await browser.get(path)
    page = await browser.get(to_signin.headers["location"])
    assert 'value="ada@example.com"' in page.text


async def test_id_token_hint_of_another_user_asks_to_sign_in(
    app: Any, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    other = unique_email()
    await sign_up(client, other)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as first, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=ISSUER
    ) as second:
        tokens, _ = await code_flow(first, client, rp, email)
        await code_flow(second, client, rp, other)
        path, _ = authorization_url(rp, prompt="none", id_token_hint=tokens["id_token"])
        mismatch = answer((await second.get(path)).headers["location"])
        assert mismatch["error"] == "login_required"
        same = answer((await first.get(path)).headers["location"])
        assert "code" in same
        forged = answer((await first.get(authorization_url(rp, id_token_hint="a.b.c")[0])).headers["location"])
        assert forged["error"] == "invalid_request"


async def test_form_post_response_mode(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    await code_flow(browser, client, rp, email)
    path, verifier = authorization_url(rp, response_mode="form_post", state="fp")
    page = await browser.get(path)
    assert page.status_code == 200
    form = parse_forms(page.text)[0]
    assert form.action == REDIRECT_URI and form.method == "post"
    fields = dict(form.inputs)
    assert fields["state"] == "fp" and fields["iss"] == ISSUER
    csp = page.headers["content-security-policy"]
    script = re.search(r"<script>(.*?)</script>", page.text).group(1)  # type: ignore[union-attr]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "https://rp.example.com" in csp
    assert (await redeem(client, rp, fields["code"], verifier)).status_code == 200
    bad = answer((await browser.get(authorization_url(rp, response_mode="fragment")[0])).headers["location"])
    assert bad["error"] == "invalid_request"


# ---------------------------------------------------------------- sessions, offline_access and logout


async def test_logout_with_id_token_hint_ends_the_session_and_its_grants(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    online, _ = await code_flow(browser, client, rp, email)
    offline, _ = await code_flow(browser, client, rp, email, scope="openid offline_access")
    response = await browser.get("/oauth2/logout", params={"id_token_hint": online["id_token"]})
    assert response.status_code == 200 and "You are signed out" in response.text
    silent = answer((await browser.get(authorization_url(rp, prompt="none")[0])).headers["location"])
    assert silent["error"] == "login_required"

    def refresh(tokens: dict[str, Any]) -> Any:
        return client.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(rp.client_id, rp.secret),
        )

    assert (await refresh(online)).json()["error"] == "invalid_grant"  # ended with the session
    # Its access token too (its family denied), at introspection and at UserInfo.
    assert await _introspected(client, rp, online["access_token"]) == {"active": False}
    userinfo = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {online['access_token']}"})
    assert userinfo.status_code == 401, userinfo.text
    assert (await _introspected(client, rp, offline["access_token"]))["active"] is True
    assert (await refresh(offline)).status_code == 200  # offline_access outlives it


async def _introspected(client: httpx.AsyncClient, rp: RelyingParty, token: str) -> dict[str, Any]:
    response = await client.post("/oauth2/introspect", data={"token": token}, auth=(rp.client_id, rp.secret))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_signing_in_again_leaves_no_grant_behind_the_logout(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    """prompt=login (or max_age) signs the browser in again over its session: the grants the old
    session made still end at the logout (found by tests/test_interop_openid_node.py: they were
    bound to the old session, which nothing ended any more, and outlived the logout)."""
    _, email = person
    before, _ = await code_flow(browser, client, rp, email)
    old_cookie = browser.cookies["grantd_session"]
    again, _ = await code_flow(browser, client, rp, email, prompt="login")
    assert browser.cookies["grantd_session"] != old_cookie
    # The replaced session is over: its cookie, kept by someone, no longer signs anyone in.
    async with httpx.AsyncClient(transport=browser._transport, base_url=ISSUER, cookies={"grantd_session": old_cookie}) as kept:
        stale = answer((await kept.get(authorization_url(rp, prompt="none")[0])).headers["location"])
    assert stale["error"] == "login_required"
    response = await browser.get("/oauth2/logout", params={"id_token_hint": again["id_token"]})
    assert response.status_code == 200 and "You are signed out" in response.text
    for tokens in (before, again):
        refreshed = await client.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(rp.client_id, rp.secret),
        )
        assert refreshed.json().get("error") == "invalid_grant", refreshed.text


async def test_another_account_signing_in_ends_the_grants_of_the_session_it_replaces(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    online, _ = await code_flow(browser, client, rp, email)
    offline, _ = await code_flow(browser, client, rp, email, scope="openid offline_access")
    other = unique_email()
    await sign_up(client, other)
    await code_flow(browser, client, rp, other, prompt="login")  # the other person, in the same browser

    def refresh(tokens: dict[str, Any]) -> Any:
        return client.post(
            "/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(rp.client_id, rp.secret),
        )

    assert (await refresh(online)).json()["error"] == "invalid_grant"  # signed out of this browser
    assert (await refresh(offline)).status_code == 200  # offline_access outlives it


async def test_logout_that_cannot_be_attributed_asks_to_confirm(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, rp: RelyingParty, person: tuple[str, str]
) -> None:
    _, email = person
    await code_flow(browser, client, rp, email)
    page = await browser.get("/oauth2/logout", params={"client_id": rp.client_id})
    assert page.status_code == 200 and "Sign out?" in page.text and "Relying Party" in page.text
    still = answer((await browser.get(authorization_url(rp, prompt="none")[0])).headers["location"])
    assert "code" in still  # not signed out by a link alone
    form = next(f for f in parse_forms(page.text) if f.action == "/oauth2/logout/confirm")
    done = await browser.post("/oauth2/logout/confirm", data=dict(form.inputs))
    assert done.status_code == 200 and "You are signed out" in done.text
    after = answer((await browser.get(authorization_url(rp, prompt="none")[0])).headers["location"])
    assert after["error"] == "login_required"
    unregistered = await browser.get(
        "/oauth2/logout", params={"client_id": rp.client_id, "post_logout_redirect_uri": "https://evil.example/"}
    )
    assert unregistered.status_code == 400 and "location" not in unregistered.headers


# ---------------------------------------------------------------- per-app settings


async def test_pairwise_subjects_differ_by_sector_and_agree_within_one(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, person: tuple[str, str]
) -> None:
    user_id, email = person
    same_sector = [await new_rp(client, subject_type="pairwise") for _ in range(2)]
    elsewhere = await new_rp(client, subject_type="pairwise", sector_identifier_uri="https://other.example.org/sector.json")
    subjects = []
    for rp in (*same_sector, elsewhere):
        tokens, _ = await code_flow(browser, client, rp, email, scope="openid email")
        claims = await verified(client, tokens["id_token"], rp.client_id)
        info = await client.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert info.json()["sub"] == claims["sub"]  # UserInfo and the ID token agree
        assert claims["sub"] != user_id and email not in claims["sub"]
        subjects.append(claims["sub"])
    assert subjects[0] == subjects[1] != subjects[2]
    # The hint of a pairwise app is understood: a silent request names the same person.
    path, _ = authorization_url(same_sector[0], prompt="none", id_token_hint=tokens["id_token"])
    assert answer((await browser.get(path)).headers["location"])["error"] == "invalid_request"  # another app's token
    own, _ = await code_flow(browser, client, same_sector[0], email)
    path, _ = authorization_url(same_sector[0], prompt="none", id_token_hint=own["id_token"])
    assert "code" in answer((await browser.get(path)).headers["location"])


async def test_require_nonce_refuses_an_openid_request_without_one(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, person: tuple[str, str]
) -> None:
    _, email = person
    strict = await new_rp(client, require_nonce=True)
    await code_flow(browser, client, strict, email)  # signed in and consented, with a nonce
    path, _ = authorization_url(strict)
    refused = answer((await browser.get(path)).headers["location"])
    assert refused["error"] == "invalid_request" and "nonce" in refused["error_description"]
    plain, _ = authorization_url(strict, scope="read_profile")  # not an OpenID request: no nonce needed
    assert (await browser.get(plain)).status_code in (200, 303)


async def test_the_app_chooses_the_id_token_algorithm(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, person: tuple[str, str]
) -> None:
    _, email = person
    for alg in ("RS256", "ES256"):
        rp = await new_rp(client, id_token_signed_response_alg=alg)
        tokens, _ = await code_flow(browser, client, rp, email)
        assert jwt.get_unverified_header(tokens["id_token"])["alg"] == alg
        await verified(client, tokens["id_token"], rp.client_id)
    default = await new_rp(client)
    tokens, _ = await code_flow(browser, client, default, email)
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "ES256"  # access tokens stay ES256


async def test_logout_goes_back_to_the_registered_uri_with_state(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, person: tuple[str, str]
) -> None:
    _, email = person
    rp = await new_rp(client, post_logout_redirect_uris=[LOGGED_OUT_URI])
    tokens, _ = await code_flow(browser, client, rp, email)
    near_miss = await browser.get(
        "/oauth2/logout",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOGGED_OUT_URI + "/x", "state": "z"},
    )
    assert near_miss.status_code == 400 and "location" not in near_miss.headers
    response = await browser.get(
        "/oauth2/logout",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOGGED_OUT_URI, "state": "bye"},
    )
    assert response.status_code == 303 and response.headers["location"] == LOGGED_OUT_URI + "?state=bye"
    silent = answer((await browser.get(authorization_url(rp, prompt="none")[0])).headers["location"])
    assert silent["error"] == "login_required"


async def test_prompt_create_opens_the_sign_up_page(browser: httpx.AsyncClient, rp: RelyingParty) -> None:
    path, _ = authorization_url(rp, prompt="create")
    response = await browser.get(path)
    assert response.status_code == 303 and response.headers["location"].startswith("/signup?")
    back = parse_qs(urlsplit(response.headers["location"]).query)["next"][0]
    assert back.startswith("/oauth2/authorize?") and "prompt" not in parse_qs(urlsplit(back).query)
    document = (await browser.get("/.well-known/openid-configuration")).json()
    assert "create" in document["prompt_values_supported"]
