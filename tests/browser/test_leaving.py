"""Deleting an account in a real browser: the warning names the app it disables; DELETE must be
typed and the password be right; then the account is gone and its app's key no longer works."""

from __future__ import annotations

from typing import Any

import httpx

from browser.conftest import field_error, follow, new_user, sign_in


def test_delete_the_account_from_the_account_page(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    user = new_user(api, "leaving@example.com")
    headers = {"Authorization": f"Bearer {user.token}"}
    body = {"name": "Ada's Plotter", "redirect_uris": ["https://plotter.example.com/cb"], "permissions": "read_profile"}
    created = api.post("/v1/apps", json=body, headers=headers)
    assert created.status_code == 200, created.text
    app_id = created.json()["data"]["app_id"]
    key = api.post(f"/v1/apps/{app_id}/keys", headers=headers).json()["data"]

    sign_in(page, base_url, user.email)
    page.goto(f"{base_url}/account#delete")
    warning = page.locator(".warning")
    assert "Ada's Plotter" in warning.locator(".owned-apps").inner_text()
    assert "cannot be undone" in warning.inner_text()
    shoot(page, "account-delete-warning")

    # DELETE not typed: refused next to its field; a wrong password: refused next to its own.
    page.get_by_label("Password, to delete your account", exact=True).fill(user.password)
    page.get_by_label("Type DELETE to confirm", exact=True).fill("yes")
    follow(page, page.get_by_role("button", name="Delete my account"))
    assert field_error(page, "Type DELETE to confirm").inner_text() == "Type DELETE to confirm."
    page.get_by_label("Password, to delete your account", exact=True).fill("not my password")
    page.get_by_label("Type DELETE to confirm", exact=True).fill("DELETE")
    follow(page, page.get_by_role("button", name="Delete my account"))
    assert field_error(page, "Password, to delete your account").inner_text() == "The current password is wrong."
    assert api.get("/v1/auth/user/info", headers=headers).status_code == 200

    page.get_by_label("Password, to delete your account", exact=True).fill(user.password)
    page.get_by_label("Type DELETE to confirm", exact=True).fill("DELETE")
    follow(page, page.get_by_role("button", name="Delete my account"))
    assert page.get_by_role("heading", level=1).inner_text() == "Your account was deleted"
    assert "the 1 app you owned was disabled" in page.locator("main").inner_text()
    shoot(page, "account-deleted")

    assert api.get("/v1/auth/user/info", headers=headers).status_code == 401
    page.goto(f"{base_url}/account")
    assert page.url.startswith(f"{base_url}/signin")
    token = api.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(app_id, key["key_secret"])
    )
    assert token.status_code == 401, token.text
