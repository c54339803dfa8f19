"""Two-step sign-in in a real browser: a person sets up an authenticator app on the account page
(the QR code drawn inline under the page's CSP, the key shown as text, a first code typed, the
recovery codes shown once), then signs in to an app: the password, then the second-factor page,
then back to the app. Codes are computed by pyotp, as a phone app would."""

from __future__ import annotations

import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import pyotp

from browser.conftest import CLIENT_ORIGIN, Traffic, callback_params, follow, new_user, register_app, sign_in
from browser.test_layout import check


def next_code(totp: pyotp.TOTP, after_step: int) -> tuple[str, int]:
    """A code of a step after ``after_step`` (the server accepts each step once), the step after
    now at the latest; the step it is of."""
    step = max(int(time.time() // 30), after_step + 1)
    while step > int(time.time() // 30) + 1:
        time.sleep(30 - time.time() % 30 + 0.1)
    return totp.at(step * 30), step


def test_a_person_sets_up_an_authenticator_app_and_signs_in_with_it(
    new_page: Callable[..., Any], api: httpx.Client, base_url: str, shoot: Any
) -> None:
    page = new_page()
    traffic = Traffic(page.context)
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
    user = new_user(api)
    sign_in(page, base_url, user.email)

    page.goto(f"{base_url}/account")
    follow(page, page.get_by_role("link", name="Set up an authenticator app"))
    assert page.get_by_role("heading", level=1).inner_text() == "Two-step sign-in"
    assert page.locator(".second-factor-status").inner_text().startswith("Off")
    follow(page, page.get_by_role("button", name="Set up an authenticator app"))

    qr = page.locator("figure.qr svg")
    assert qr.is_visible() and qr.bounding_box()["width"] >= 120  # large enough for a phone's camera
    secret = page.locator("code.totp-secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    totp = pyotp.TOTP(secret)
    code, step = next_code(totp, 0)
    page.get_by_label("Code", exact=True).fill(code)
    check(page, "the enrolment page")
    shoot(page, "totp-enrol")
    follow(page, page.get_by_role("button", name="Turn on"))

    recovery = [li.inner_text() for li in page.locator("ul.recovery-codes li").all()]
    assert len(recovery) == 10 and all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", c) for c in recovery)
    shoot(page, "totp-recovery-codes")
    page.goto(f"{base_url}/account/second-factor")  # shown once
    assert page.locator("ul.recovery-codes li").count() == 0
    assert page.locator(".second-factor-status").inner_text().startswith("On")
    assert refused == [], refused
    assert traffic.to(CLIENT_ORIGIN) == [] and all(url.startswith(base_url) for url in traffic.urls)

    # Another browser, an app's authorization request: the password, then the code, then the app.
    app = register_app(api, name="Photo Printer")
    other = new_page()
    Traffic(other.context)
    other.goto(app.authorize_url(base_url))
    sign_in(other, None, user.email)
    assert urlsplit(other.url).path == "/second-factor"
    assert not any(c["name"] == "grantd_session" for c in other.context.cookies(base_url))
    assert other.get_by_role("heading", level=1).inner_text() == "Two-step sign-in"
    other.get_by_label("Code", exact=True).fill("000000" if totp.at(time.time()) != "000000" else "111111")
    follow(other, other.get_by_role("button", name="Continue"))
    assert other.get_by_role("alert").inner_text() == "The code is wrong or was used already."
    code, step = next_code(totp, step)
    other.get_by_label("Code", exact=True).fill(code)
    check(other, "the second-factor page")
    shoot(other, "totp-prompt")
    follow(other, other.get_by_role("button", name="Continue"))
    other.get_by_role("button", name="Allow").click()
    other.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    assert app.redeem(api, callback_params(other.url)["code"]).status_code == 200


def test_a_recovery_code_signs_in_once(new_page: Callable[..., Any], api: httpx.Client, base_url: str) -> None:
    page = new_page()
    user = new_user(api)
    sign_in(page, base_url, user.email)
    page.goto(f"{base_url}/account/second-factor")
    follow(page, page.get_by_role("button", name="Set up an authenticator app"))
    totp = pyotp.TOTP(page.locator("code.totp-secret").inner_text())
    page.get_by_label("Code", exact=True).fill(next_code(totp, 0)[0])
    follow(page, page.get_by_role("button", name="Turn on"))
    recovery = page.locator("ul.recovery-codes li").first.inner_text()

    for attempt, expected in enumerate(("/", "/second-factor")):
        again = new_page()
        sign_in(again, base_url, user.email)
        again.get_by_label("Code", exact=True).fill(recovery)
        follow(again, again.get_by_role("button", name="Continue"))
        assert urlsplit(again.url).path == expected, (attempt, again.url)
