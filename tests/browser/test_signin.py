"""Signing in and out in a real browser: the wrong-password message, the lock-out messages, sign-out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from browser.conftest import follow, launch_server, new_account, sign_in
from support.neucron import PASSWORD, unique_email
from support.servers import ServerProcess


def test_wrong_password_then_sign_in(page: Any, api: httpx.Client, base_url: str, shoot: Any) -> None:
    _, email = new_account(api, "ada@example.com")  # a fixed address: the screenshots stay readable
    sign_in(page, base_url, email, PASSWORD + "-wrong")
    assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    assert page.url.startswith(f"{base_url}/signin")
    assert page.get_by_label("Email").input_value() == email  # kept; the password is not
    assert page.get_by_label("Password", exact=True).input_value() == ""
    assert not any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    shoot(page, "signin-wrong-password")
    # The form shown again works.
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    follow(page, page.get_by_role("button", name="Sign in"))
    assert page.url == f"{base_url}/"
    assert f"You are signed in as {email}." in page.inner_text("main")


def test_sign_out_ends_the_session(signed_in_page: tuple[Any, str, str], base_url: str, shoot: Any) -> None:
    page, email, _ = signed_in_page
    page.goto(f"{base_url}/account")
    assert page.locator(".facts .email").inner_text() == email
    token = next(c["value"] for c in page.context.cookies(base_url) if c["name"] == "grantd_session")
    follow(page, page.get_by_role("navigation", name="Main").get_by_role("button", name="Sign out"))
    assert page.url == f"{base_url}/"
    assert "You are not signed in." in page.inner_text("main")
    assert not any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    shoot(page, "signed-out")
    # The account page now asks to sign in, and the old session token is dead even if replayed.
    page.goto(f"{base_url}/account")
    assert page.url == f"{base_url}/signin?next=%2Faccount"
    page.context.add_cookies([{"name": "grantd_session", "value": token, "url": base_url}])
    page.goto(f"{base_url}/account")
    assert page.url.startswith(f"{base_url}/signin")


# ---------------------------------------------------------------- lock-out, on a server of its own with low limits


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    with launch_server(
        tmp_path_factory,
        secret_key,
        rate_limit_login_per_account=3,
        rate_limit_signup_per_address=2,
    ) as server:
        yield server


def test_sign_in_lock_out(page: Any, strict_server: ServerProcess, shoot: Any) -> None:
    base_url = strict_server.base_url
    with httpx.Client(base_url=base_url) as api:
        _, email = new_account(api, "grace@example.com")
    for _ in range(3):
        sign_in(page, base_url, email, "not-the-password")
        assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    # Over the limit: even the right password is refused until the window ends, and the page says how long.
    sign_in(page, base_url, email, PASSWORD)
    message = page.get_by_role("alert").inner_text()
    assert re.fullmatch(
        r"Too many failed sign-in attempts\. Sign-in is locked for \d+ (minutes|seconds?); try again later\.",
        message,
    ), message
    assert not any(c["name"] == "grantd_session" for c in page.context.cookies(base_url))
    shoot(page, "signin-locked")


def test_sign_up_lock_out(page: Any, strict_server: ServerProcess, shoot: Any) -> None:
    base_url = strict_server.base_url
    page.goto(f"{base_url}/signup")
    attempts = 0
    while True:  # the test before may have used some of this address's budget
        attempts += 1
        assert attempts <= 3, "sign-up was never limited"
        page.get_by_label("Email", exact=True).fill(unique_email())
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        follow(page, page.get_by_role("button", name="Create account"))
        if page.url.startswith(f"{base_url}/signup"):
            break
        page.context.clear_cookies()
        page.goto(f"{base_url}/signup")
    message = page.get_by_role("alert").inner_text()
    assert re.fullmatch(r"Too many accounts were created from your network\. Try again in \d+ (minutes|seconds?|hours?)\.", message), message
    shoot(page, "signup-locked")
