"""Connected apps in a real browser: what a person granted, when it was last used, and Revoke."""

from __future__ import annotations

import re
from typing import Any

import httpx

from browser.conftest import CLIENT_ORIGIN, Traffic, callback_params, follow, new_user, register_app, sign_in

DATE = r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC"


def test_connected_apps_lists_a_grant_and_revoke_ends_its_tokens(
    page: Any, api: httpx.Client, base_url: str, shoot: Any
) -> None:
    app = register_app(api, name="Calendar Sync")
    other = register_app(api, name="Note Taker")
    user = new_user(api, "edsger@example.com")
    Traffic(page.context)
    sign_in(page, base_url, user.email)

    page.goto(f"{base_url}/account/apps")
    assert "You have not let any app act for you." in page.inner_text("main")

    # The user allows both apps; Calendar Sync redeems its code, Note Taker does not yet.
    tokens = {}
    for registered, scope in ((app, "read_profile write_data"), (other, "read_profile")):
        page.goto(registered.authorize_url(base_url, scope=scope))
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
        if registered is app:
            response = registered.redeem(api, callback_params(page.url)["code"])
            assert response.status_code == 200, response.text
            tokens = response.json()
    assert app.introspect(api, tokens["access_token"])["active"] is True

    page.goto(f"{base_url}/")
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Connected apps"))
    entries = page.locator("li.grant")
    assert entries.count() == 2
    calendar = entries.filter(has=page.get_by_role("heading", name="Calendar Sync"))
    assert [" ".join(li.text_content().split()) for li in calendar.locator("ul.permissions li").all()] == [
        "Read your profile: your user id and email address. read_profile",
        "Create and change data on your behalf. write_data",
    ]
    facts = dict(zip(calendar.locator("dt").all_inner_texts(), calendar.locator("dd").all_inner_texts()))
    assert re.fullmatch(DATE, facts["Granted"]), facts
    assert re.fullmatch(DATE, facts["Last used"]), facts  # its token was issued just now
    notes = entries.filter(has=page.get_by_role("heading", name="Note Taker"))
    facts = dict(zip(notes.locator("dt").all_inner_texts(), notes.locator("dd").all_inner_texts()))
    assert facts["Last used"] == "never"  # no token issued yet
    shoot(page, "connected-apps")

    # Revoke Calendar Sync: gone from the list, and every token of the grant fails at once.
    follow(page, calendar.get_by_role("button", name="Revoke access of Calendar Sync"))
    assert page.url == f"{base_url}/account/apps?revoked=1"
    assert page.get_by_role("status").inner_text() == "Access revoked: the app's tokens no longer work."
    assert page.locator("li.grant h2").all_inner_texts() == ["Note Taker"]
    shoot(page, "connected-apps-revoked")
    assert app.introspect(api, tokens["access_token"]) == {"active": False}
    refreshed = api.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(app.app_id, app.key_secret),
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
    # The app has to ask again: the next authorization request shows the consent page.
    page.goto(app.authorize_url(base_url))
    assert page.get_by_role("button", name="Allow").is_visible()
