"""Neucron v2 in a real browser: the redirect_url the SDK's authorize call answers, opened in
Chromium; signing in (or up) on the hosted page, consent, and back at the app with the code and
the state; then the code redeemed as the SDK redeems it, from the app's backend."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from browser.conftest import CLIENT_ORIGIN, App, Traffic, callback_params, follow, new_user, register_app, sign_in
from support.neucron import PASSWORD, unique_email

SDK_HEADERS = {"X-Neucron-SDK": "neucron-ts-sdk/2.2.3", "Content-Type": "application/json", "Accept": "application/json"}


def sdk_get(api: httpx.Client, path: str, params: dict[str, str]) -> httpx.Response:
    """A GET as Neucron's SDK sends it (base URL under /v1, no Authorization)."""
    return api.get(f"/v1{path}?{urlencode(params)}", headers=SDK_HEADERS)


def redirect_url(api: httpx.Client, app: App, state: str, flow: str) -> str:
    params = {
        "response_type": "code", "client_id": app.app_id, "redirect_uri": app.redirect_uri,
        "state": state, "platform": app.name, "flow": flow,
    }
    response = sdk_get(api, "/oauth/authorize", params)
    assert response.status_code == 200, response.text
    return response.json()["redirect_url"]  # type: ignore[no-any-return]


def allow_and_redeem(page: Any, api: httpx.Client, app: App, state: str) -> str:
    """On the consent page for ``app``: Allow, land at the app with the code and ``state``, redeem
    it as the SDK does; the access token."""
    assert page.url.split("?")[0].endswith("/oauth2/authorize"), page.url
    assert page.get_by_role("heading", level=1).inner_text() == f"{app.name} wants to access your account"
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    params = callback_params(page.url)
    assert params["state"] == state, page.url
    query = {
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": app.redirect_uri,
        "client_id": app.app_id, "client_secret": app.key_secret, "state": state,
    }
    response = sdk_get(api, "/oauth/token", query)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert app.introspect(api, token)["active"] is True
    return token  # type: ignore[no-any-return]


def test_sign_in_with_neucron_v2(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    app = register_app(api, name="Ledger Lite")
    user = new_user(api)
    traffic = Traffic(page.context)

    page.goto(redirect_url(api, app, "v2-in", "sign-in"))
    assert page.url.startswith(f"{base_url}/signin?next=")
    assert page.locator(".lead").inner_text() == "to continue to Ledger Lite"
    shoot(page, "neucron-v2-signin")
    sign_in(page, None, user.email)
    allow_and_redeem(page, api, app, "v2-in")
    assert all(url.startswith((base_url, CLIENT_ORIGIN)) for url in traffic.urls), traffic.urls


def test_sign_up_with_neucron_v2(page: Any, api: httpx.Client, base_url: str) -> None:
    app = register_app(api, name="Ledger Lite")
    traffic = Traffic(page.context)
    page.goto(redirect_url(api, app, "v2-up", "sign-up"))
    assert page.url.startswith(f"{base_url}/signup?next=")
    assert page.get_by_role("heading", level=1).inner_text() == "Create an account"
    assert page.locator(".lead").inner_text() == "to continue to Ledger Lite"
    page.get_by_label("Email", exact=True).fill(unique_email())
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    follow(page, page.get_by_role("button", name="Create account"))
    allow_and_redeem(page, api, app, "v2-up")
    assert all(url.startswith((base_url, CLIENT_ORIGIN)) for url in traffic.urls), traffic.urls
