"""Signing in and out in a real browser: the wrong-password message, the lock-out message."""

from __future__ import annotations

from typing import Any

import httpx

from browser.conftest import new_account, sign_in
from conftest import PASSWORD


def test_wrong_password_then_sign_in(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    _, email = new_account(api)
    sign_in(page, base_url, email, PASSWORD + "-wrong")
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Wrong email or password."
    assert page.url.startswith(f"{base_url}/signin")
    assert not any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    shoot(page, "signin-wrong-password")
    # The form shown again works.
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url == f"{base_url}/"
    assert "You are signed in." in page.inner_text("main")
