"""Sign-up in a real browser: the messages a person sees next to the field they concern."""

from __future__ import annotations

from typing import Any

import httpx

from browser.conftest import field_error, follow, new_account
from support.neucron import PASSWORD, unique_email


def submit_signup(page: Any, email: str, password: str) -> None:
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    follow(page, page.get_by_role("button", name="Create account"))


def test_sign_up_with_a_weak_password_then_a_taken_email_then_for_real(
    page: Any, api: httpx.Client, base_url: str, shoot: Any
) -> None:
    page.goto(f"{base_url}/")
    follow(page, page.get_by_role("link", name="Create an account"))
    assert page.url == f"{base_url}/signup"
    assert page.get_by_role("heading", level=1).inner_text() == "Create an account"
    hint = page.locator("#password-hint").inner_text()
    assert "At least 8 characters" in hint
    shoot(page, "signup")

    # A weak password: the rule's own words, under the password field; the email is kept.
    email = "alan@example.com"
    submit_signup(page, email, "password123")
    assert field_error(page, "Password").inner_text() == "Password is too weak: it is too common or too repetitive."
    assert field_error(page, "Email").count() == 0
    assert page.get_by_label("Email", exact=True).input_value() == email
    assert page.get_by_label("Password", exact=True).get_attribute("aria-invalid") == "true"
    shoot(page, "signup-weak-password")
    submit_signup(page, email, "short")
    assert field_error(page, "Password").inner_text() == "Password is too weak: use at least 8 characters."

    # A taken email: said under the email field, with a way to sign in instead.
    _, taken = new_account(api, "margaret@example.com")
    submit_signup(page, taken, PASSWORD)
    assert field_error(page, "Email").inner_text().startswith("An account with this email already exists.")
    assert field_error(page, "Password").count() == 0
    shoot(page, "signup-email-taken")
    sign_in_instead = field_error(page, "Email").get_by_role("link", name="Sign in instead")
    assert sign_in_instead.get_attribute("href") == "/signin"

    # Nothing typed: each field says what it needs.
    page.get_by_label("Email", exact=True).fill("")
    follow(page, page.get_by_role("button", name="Create account"))
    assert field_error(page, "Email").inner_text() == "Enter your email address."
    assert field_error(page, "Password").inner_text() == "Choose a password."

    # A good one: signed in, on the home page, with the navigation.
    submit_signup(page, email, PASSWORD)
    assert page.url == f"{base_url}/"
    assert f"You are signed in as {email}." in page.inner_text("main")
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Home", "Connected apps", "Developer console", "Account", "Sign out"):
        assert nav.get_by_text(name, exact=True).is_visible(), name
    shoot(page, "home")
    # The account works with the Neucron API too: the same account, the same password.
    response = api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text


def test_sign_up_and_sign_in_link_to_each_other(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/signin?next=/account")
    follow(page, page.get_by_role("link", name="Create one"))
    assert page.url == f"{base_url}/signup?next=%2Faccount"
    follow(page, page.get_by_role("link", name="Sign in", exact=True))
    assert page.url == f"{base_url}/signin?next=%2Faccount"
    # Signing up from there lands where the person was going.
    follow(page, page.get_by_role("link", name="Create one"))
    email = unique_email()
    submit_signup(page, email, PASSWORD)
    assert page.url == f"{base_url}/account"
    assert page.locator(".facts .email").inner_text() == email
