"""OpenID Connect's pages in a real browser: the consent page of an app asking for the standard
scopes (each in plain words), and RP-initiated logout's confirmation, whose Sign out button ends the
session, and the signed-out page that follows."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from browser.conftest import CLIENT_ORIGIN, Traffic, callback_params, follow, new_user, register_app, sign_in
from browser.test_consent import listed

OPENID_SCOPE = "openid profile email phone offline_access"


def silent_answer(page: Any, url: str) -> dict[str, str]:
    """The answer to a ``prompt=none`` request made with the browser's cookies: the redirect to the
    app, read from its Location (Playwright does not route a navigation's redirect to the app's
    site, which does not exist)."""
    response = page.context.request.get(url, max_redirects=0)
    assert response.status == 303, response.text()
    location = response.headers["location"]
    assert location.startswith(f"{CLIENT_ORIGIN}/callback?"), location
    return callback_params(location)


def test_consent_for_openid_scopes_then_logout_confirmation(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    # Addresses of their own: the live server is the whole browser session's, test_consent has Barbara's.
    app = register_app(api, name="Photo Printer", owner=new_user(api, "oidc-team@photoprinter.example.com"))
    user = new_user(api, "carmen@example.com")
    Traffic(page.context)

    page.goto(app.authorize_url(base_url, scope=OPENID_SCOPE, nonce="n-0S6_WzA2Mj"))
    sign_in(page, None, user.email)
    assert page.get_by_role("heading", level=1).inner_text() == "Photo Printer wants to access your account"
    assert listed(page, "requested") == [
        "New Sign you in to the app and know it is you (your account's identifier) openid",
        "New See your name, user name, profile picture and language profile",
        "New See your email address and whether it is verified email",
        "New See your phone number phone",
        "New Keep access after you sign out, until you disconnect the app offline_access",
    ]
    shoot(page, "consent-openid")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    tokens = app.redeem(api, callback_params(page.url)["code"]).json()
    assert set(tokens["scope"].split()) == set(OPENID_SCOPE.split()) and tokens["id_token"]

    # A logout link naming only the app cannot be attributed to it: the user is asked.
    page.goto(f"{base_url}/oauth2/logout?client_id={app.app_id}")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign out?"
    assert " ".join(page.locator("main p").first.inner_text().split()) == (
        f"Photo Printer asks to sign you out of your account {user.email}."
    )
    shoot(page, "logout-confirm")
    follow(page, page.get_by_role("button", name="Sign out"))
    assert page.get_by_role("heading", level=1).inner_text() == "You are signed out"
    assert "Your session here has ended, as Photo Printer asked." in page.locator("main").inner_text()
    shoot(page, "signed-out-rp")
    assert not any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))

    # The session has ended: the app's silent request is told so.
    params = silent_answer(page, app.authorize_url(base_url, scope="openid", prompt="none", state="after"))
    assert params["error"] == "login_required" and params["state"] == "after"


def test_logout_confirmation_stay_signed_in_keeps_the_session(page: Any, api: httpx.Client, base_url: str) -> None:
    app = register_app(api, name="Photo Printer")
    user = new_user(api)
    Traffic(page.context)
    sign_in(page, base_url, user.email)
    page.goto(f"{base_url}/oauth2/logout")
    assert " ".join(page.locator("main p").first.inner_text().split()) == (
        f"A site asks to sign you out of your account {user.email}."
    )
    follow(page, page.get_by_role("link", name="Stay signed in"))
    assert any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    params = silent_answer(page, app.authorize_url(base_url, scope="openid", prompt="none"))
    assert params["error"] == "consent_required"  # signed in still; not yet consented


def test_an_authorization_request_posted_from_the_apps_site_finds_the_session(
    page: Any, api: httpx.Client, base_url: str
) -> None:
    """OpenID Connect Core §3.1.2.1: the authorization endpoint takes POST too. Posted from the app's
    site, the request carries no session cookie (SameSite=Lax sends none with a cross-site POST);
    grantd sends it on by GET, with which the browser sends it: a signed-in user's ``prompt=none``
    gets a code, as by GET."""
    app = register_app(api, name="Photo Printer")
    user = new_user(api)
    request = dict(parse_qsl(urlsplit(app.authorize_url(base_url, scope="openid", prompt="none", state="posted")).query))
    inputs = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value)}">' for name, value in request.items())
    app_page = f'<!doctype html><title>app</title><form method="post" action="{base_url}/oauth2/authorize">{inputs}<button>Sign in with grantd</button></form>'

    def app_site(route: Any) -> None:
        body = app_page if route.request.url.endswith("/start") else "<!doctype html><title>client</title><h1>Client callback</h1>"
        route.fulfill(status=200, content_type="text/html", body=body)

    page.context.route(f"{CLIENT_ORIGIN}/**", app_site)
    sign_in(page, base_url, user.email)
    page.goto(app.authorize_url(base_url, scope="openid"))
    page.get_by_role("button", name="Allow").click()  # consented once
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")

    page.goto(f"{CLIENT_ORIGIN}/start")
    # The redirect back to the app is read from grantd's answer (Playwright routes no redirect of a
    # navigation to the app's site, which does not exist).
    with page.expect_response(lambda r: r.headers.get("location", "").startswith(f"{CLIENT_ORIGIN}/callback?")) as back:
        page.get_by_role("button", name="Sign in with grantd").click()
    assert back.value.request.method == "GET"  # the POST was sent on by GET
    params = callback_params(back.value.headers["location"])
    assert params["state"] == "posted" and "code" in params, params
