"""The consent page in a real browser: the app, its owner, each permission, what is new; Allow and Deny."""

from __future__ import annotations

from typing import Any

import httpx

from browser.conftest import CLIENT_ORIGIN, Traffic, callback_params, new_user, register_app, sign_in


def listed(page: Any, which: str) -> list[str]:
    """Each permission of a list as read aloud: "New" (when marked), its description, its name."""
    return [" ".join(item.text_content().split()) for item in page.locator(f"ul.permissions.{which} li").all()]


def test_consent_shows_the_owner_and_marks_what_is_new(
    page: Any, api: httpx.Client, base_url: str, shoot: Any
) -> None:
    app = register_app(api, name="Photo Printer", owner=new_user(api, "developers@photoprinter.example.com"))
    user = new_user(api, "barbara@example.com")
    traffic = Traffic(page.context)

    # Not signed in: the sign-in page names the app, then the consent page follows.
    page.goto(app.authorize_url(base_url, scope="read_profile write_data"))
    assert page.url.startswith(f"{base_url}/signin?next=")
    assert page.locator(".lead").inner_text() == "to continue to Photo Printer"
    shoot(page, "signin-for-app")
    sign_in(page, None, user.email)
    assert page.url.startswith(f"{base_url}/oauth2/authorize?")
    assert page.get_by_role("heading", level=1).inner_text() == "Photo Printer wants to access your account"
    assert page.locator(".owner").inner_text() == f"This app is registered by {app.owner.email}."
    assert listed(page, "requested") == [
        "New Read your profile: your user id and email address. read_profile",
        "New Create and change data on your behalf. write_data",
    ]
    assert page.locator("ul.permissions.granted").count() == 0
    shoot(page, "consent")

    # Allow: back to the app with a code, which it redeems.
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    params = callback_params(page.url)
    assert params["state"] == "st-1" and params["iss"] == base_url
    response = app.redeem(api, params["code"])
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read_profile write_data"

    # Asking for one more permission: only that one is new; the rest are listed as already allowed.
    page.goto(app.authorize_url(base_url, scope="read_profile write_data manage_notifications", state="st-2"))
    assert listed(page, "requested") == ["New Manage the notifications sent to you. manage_notifications"]
    assert listed(page, "granted") == [
        "Read your profile: your user id and email address. read_profile",
        "Create and change data on your behalf. write_data",
    ]
    assert page.locator("ul.permissions.granted .badge").count() == 0
    shoot(page, "consent-new-permission")

    # Deny: back to the app with access_denied, and nothing more is granted.
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    params = callback_params(page.url)
    assert params["error"] == "access_denied" and params["state"] == "st-2" and "code" not in params
    grants = api.get("/v1/grants", headers={"Authorization": f"Bearer {user.token}"}).json()["data"]["grants"]
    assert [(g["app_id"], g["permissions"]) for g in grants] == [(app.app_id, "read_profile,write_data")]
    assert all(url.startswith((base_url, CLIENT_ORIGIN)) for url in traffic.urls), traffic.urls
