"""Every page at a phone's width: nothing wider than the screen, every control labelled, no script needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from browser.conftest import CLIENT_ORIGIN, PHONE, Traffic, follow, new_user, register_app, sign_in

UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter(el => el.type !== "hidden" && !el.hidden && el.labels.length === 0)
    .map(el => el.outerHTML)"""
UNNAMED_BUTTONS = """() => [...document.querySelectorAll("button")]
    .filter(el => !(el.getAttribute("aria-label") || el.textContent).trim())
    .map(el => el.outerHTML)"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def check(page: Any, what: str) -> None:
    assert page.evaluate(OVERFLOW) <= 0, f"{what} is wider than a phone"
    assert page.evaluate(UNLABELLED) == [], f"{what} has a control without a label"
    assert page.evaluate(UNNAMED_BUTTONS) == [], f"{what} has a button without a name"


def test_pages_fit_a_phone_and_label_every_control(
    new_page: Callable[..., Any], api: httpx.Client, base_url: str, shoot: Any
) -> None:
    page = new_page(viewport=PHONE, java_script_enabled=False)  # the pages need no script
    Traffic(page.context)
    owner = new_user(api, "team@a-rather-long-domain-name.example.com")
    app = register_app(api, name="A Rather Long Application Name For A Small Screen", owner=owner)
    user = new_user(api, "hedy@example.com")
    # A person signing up with a long address, whose errors are shown.
    page.goto(f"{base_url}/signup")
    check(page, "sign-up")
    page.get_by_label("Email", exact=True).fill("someone.with.a.rather.long.address@subdomain.example.com")
    page.get_by_label("Password", exact=True).fill("password")
    follow(page, page.get_by_role("button", name="Create account"))
    assert page.locator(".field .error").all_inner_texts() == ["Password is too weak: it is too common or too repetitive."]
    check(page, "sign-up with errors")
    shoot(page, "phone-signup-errors")

    page.goto(f"{base_url}/signin")
    check(page, "sign-in")
    sign_in(page, None, user.email)
    check(page, "home")
    shoot(page, "phone-home")

    page.goto(app.authorize_url(base_url, scope="read_profile write_data manage_notifications"))
    check(page, "consent")
    shoot(page, "phone-consent")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")

    for path, name in (("/account/apps", "connected apps"), ("/account", "account")):
        page.goto(f"{base_url}{path}")
        assert page.url == f"{base_url}{path}"
        check(page, name)
    shoot(page, "phone-account")
    page.goto(app.authorize_url(base_url, redirect_uri="https://evil.example/"))
    check(page, "error page")
