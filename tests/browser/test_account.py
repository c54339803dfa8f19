"""The account page in a real browser: a password change ends the user's other sessions, not this one."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import httpx

from browser.conftest import field_error, follow, new_user, sign_in

NEW_PASSWORD = "a brand new passphrase"


def change_password(page: Any, current: str, new: str) -> None:
    page.get_by_label("Current password", exact=True).fill(current)
    page.get_by_label("New password", exact=True).fill(new)
    follow(page, page.get_by_role("button", name="Change password"))


def test_password_change_ends_the_other_sessions(
    new_page: Callable[..., Any], api: httpx.Client, base_url: str, shoot: Any
) -> None:
    user = new_user(api, "katherine@example.com")
    laptop, phone = new_page(), new_page()  # two browsers of one person
    sign_in(laptop, base_url, user.email)
    sign_in(phone, base_url, user.email)
    phone.goto(f"{base_url}/account")
    assert phone.locator(".facts .email").inner_text() == user.email

    follow(laptop, laptop.get_by_role("navigation", name="Main").get_by_role("link", name="Account"))
    assert laptop.url == f"{base_url}/account"
    assert laptop.locator(".facts .email").inner_text() == user.email
    shoot(laptop, "account")

    # A wrong current password, then a weak new one: each said next to its field; nothing changes.
    change_password(laptop, "not my password", NEW_PASSWORD)
    assert field_error(laptop, "Current password").inner_text() == "The current password is wrong."
    assert field_error(laptop, "New password").count() == 0
    shoot(laptop, "account-wrong-current-password")
    change_password(laptop, user.password, "password1")
    assert field_error(laptop, "New password").inner_text() == "Password is too weak: it is too common or too repetitive."
    assert field_error(laptop, "Current password").count() == 0
    phone.reload()
    assert phone.url == f"{base_url}/account", "a refused change ended a session"
    assert api.post("/v1/auth/logout", headers={"Authorization": f"Bearer {user.token}"}).status_code == 200

    # The change itself.
    other = api.post("/v1/auth/login", json={"email": user.email, "password": user.password}).json()["data"]
    change_password(laptop, user.password, NEW_PASSWORD)
    assert laptop.url == f"{base_url}/account?changed=1"
    assert laptop.get_by_role("status").inner_text() == (
        "Your password was changed. Every other session of yours was signed out."
    )
    shoot(laptop, "account-password-changed")

    # The other browser is signed out; so is a session signed in over the API.
    phone.reload()
    assert phone.url == f"{base_url}/signin?next=%2Faccount"
    headers = {"Authorization": f"Bearer {other['access_token']}"}
    assert api.get("/v1/grants", headers=headers).status_code == 401
    # This browser stays signed in.
    laptop.goto(f"{base_url}/account/apps")
    assert laptop.url == f"{base_url}/account/apps"
    # Only the new password signs in.
    assert api.post("/v1/auth/login", json={"email": user.email, "password": user.password}).status_code == 401
    sign_in(phone, None, user.email, user.password)
    assert phone.get_by_role("alert").inner_text() == "Wrong email or password."
    sign_in(phone, None, user.email, NEW_PASSWORD)
    assert phone.url == f"{base_url}/account"
