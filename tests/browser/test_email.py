"""Email in a real browser, following the links of the messages a real server delivered: a
`grantd serve` of its own sends over SMTP (GRANTD_SMTP_URL) to an aiosmtpd server in this process.

- The forgot-password journey: the sign-in page's "Forgot password?", the message, its link, a
  new password, signed in with it.
- Sign-up's verification: the message as its HTML renders in Chromium (the screenshot of "the
  verification email as a user sees it"), its link clicked, the button pressed, the account page.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

import secret_harvest
from browser.conftest import follow, launch_server, new_user, sign_in
from support.neucron import PASSWORD
from support.servers import ServerProcess
from support.smtp import SmtpServer

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    logger = logging.getLogger("mail.log")  # aiosmtpd logs what it receives at DEBUG: not into the suite's log
    level = logger.level
    logger.setLevel(logging.WARNING)
    server = SmtpServer()
    server.start()
    yield server
    server.stop()
    logger.setLevel(level)


@pytest.fixture(scope="module")
def mail_server(tmp_path_factory: pytest.TempPathFactory, secret_key: str, smtp: SmtpServer) -> Iterator[ServerProcess]:
    with launch_server(tmp_path_factory, secret_key, smtp_url=smtp.url, mail_from="accounts@grantd.example") as server:
        yield server


@pytest.fixture
def mail_api(mail_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mail_server.base_url, timeout=30) as client:
        yield client


def _body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    return str(part.get_content())


def _link_in(message: EmailMessage, base_url: str, path: str) -> str:
    """The one link to ``path`` in the message's text, which its HTML carries too."""
    text = _body(message, "plain")
    links = [word for word in text.split() if word.startswith(f"{base_url}{path}?token=")]
    assert len(links) == 1, text
    assert f'href="{links[0]}"' in _body(message, "html")
    secret_harvest.HARVEST.keep("token", links[0].partition("token=")[2], f"browser/test_email: a {path} token")
    return links[0]


def show_message(page: Any, message: EmailMessage) -> None:
    """The message as a mail reader shows it: its From, To and Subject above its HTML body, rendered
    by Chromium as delivered (the body's own markup and styles, nothing added inside it)."""
    page.goto("about:blank")  # a document of its own: not under the CSP of the page shown before
    page.set_content(_body(message, "html"))
    header = (
        '<div id="mail-header" style="font: 14px system-ui, sans-serif; background: #f6f8fa; '
        'border-bottom: 1px solid #d0d7de; padding: 12px 16px; color: #1f2328">'
        + "".join(
            f"<div><span style='color: #57606a; display: inline-block; width: 5em'>{name}</span>{html.escape(str(message[name]))}</div>"
            for name in ("From", "To", "Subject")
        )
        + "</div>"
    )
    page.evaluate("header => document.body.insertAdjacentHTML('beforebegin', header)", header)


def test_forgot_password_from_the_sign_in_page_to_signed_in_with_the_new_password(
    page: Any, mail_server: ServerProcess, mail_api: httpx.Client, smtp: SmtpServer, shoot: Any
) -> None:
    base_url = mail_server.base_url
    user = new_user(mail_api, "ada@example.com")
    page.goto(f"{base_url}/signin")
    follow(page, page.get_by_role("link", name="Forgot password?"))
    assert page.url == f"{base_url}/password/forgot"
    page.get_by_label("Email", exact=True).fill(user.email)
    shoot(page, "forgot-password-1-request")
    follow(page, page.get_by_role("button", name="Send the link"))
    assert page.get_by_role("status").inner_text() == (
        "If an account exists for that address, we sent a link to reset its password."
    )
    shoot(page, "forgot-password-2-sent")

    message = smtp.inbox.wait_for(user.email, "Reset your password")
    assert message["From"] == "accounts@grantd.example"
    # The message's link, clicked where the message shows it.
    show_message(page, message)
    shoot(page, "forgot-password-email")
    reset_url = _link_in(message, base_url, "/password/reset")
    follow(page, page.get_by_role("link", name="Reset your password"))
    assert page.url == reset_url
    assert page.get_by_role("heading", level=1).inner_text() == "Choose a new password"
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    shoot(page, "forgot-password-3-new-password")
    follow(page, page.get_by_role("button", name="Set the password"))
    assert page.get_by_role("alert").inner_text() == "Your password was changed. Sign in with the new one."

    # The old password no longer signs in; the new one does.
    sign_in(page, None, user.email, PASSWORD)
    assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    sign_in(page, None, user.email, NEW_PASSWORD)
    assert page.url == f"{base_url}/"
    assert f"You are signed in as {user.email}." in page.inner_text("main")
    shoot(page, "forgot-password-4-done")
    # The link worked once.
    page.goto(reset_url)
    assert page.get_by_role("heading", level=1).inner_text() == "This link cannot be used"
    # The API's token of before the reset was ended with every other session.
    assert mail_api.get("/v1/auth/user/info", headers={"Authorization": user.token}).status_code == 401


def test_sign_up_then_verify_the_address_from_the_message(
    page: Any, mail_server: ServerProcess, mail_api: httpx.Client, smtp: SmtpServer, shoot: Any
) -> None:
    base_url = mail_server.base_url
    email = "grace@example.com"
    page.goto(f"{base_url}/signup")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    follow(page, page.get_by_role("button", name="Create account"))
    assert page.url == f"{base_url}/"
    page.goto(f"{base_url}/account")
    assert page.locator(".email-status").inner_text() == "Not yet: open the link we sent to this address."
    token = mail_api.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["token"]
    info = mail_api.get("/v1/auth/user/info", headers={"Authorization": token})
    assert info.json()["is_email_verified"] is False

    message = smtp.inbox.wait_for(email, "Verify your email address")
    assert message["From"] == "accounts@grantd.example"
    verify_url = _link_in(message, base_url, "/email/verify")
    show_message(page, message)
    assert page.get_by_role("heading", level=1).inner_text() == "Verify your email address"
    assert email in page.inner_text("body")
    shoot(page, "verification-email")

    # The link shows what it proves and a button; only the button verifies.
    follow(page, page.get_by_role("link", name="Verify your email address"))
    assert page.url == verify_url
    assert email in page.locator(".lead").inner_text()
    assert mail_api.get("/v1/auth/user/info", headers={"Authorization": token}).json()["is_email_verified"] is False
    shoot(page, "email-verify-confirm")
    follow(page, page.get_by_role("button", name="Verify"))
    assert page.get_by_role("heading", level=1).inner_text() == "Email address verified"
    assert page.get_by_role("status").inner_text() == f"{email} is verified: it is your account's email address."
    shoot(page, "email-verified")

    assert mail_api.get("/v1/auth/user/info", headers={"Authorization": token}).json()["is_email_verified"] is True
    follow(page, page.get_by_role("link", name="Go to your account"))
    assert page.locator(".email-status").inner_text() == "Yes: you opened the link we sent to this address."
    assert page.get_by_role("button", name="Send the link again").count() == 0
    page.goto(verify_url)
    assert page.get_by_role("heading", level=1).inner_text() == "This link cannot be used"


def test_an_email_change_waits_for_the_new_address_and_tells_the_old_one(
    page: Any, mail_server: ServerProcess, mail_api: httpx.Client, smtp: SmtpServer, shoot: Any
) -> None:
    base_url = mail_server.base_url
    user = new_user(mail_api, "katherine@example.com")
    new = "katherine.j@example.org"
    sign_in(page, base_url, user.email)
    page.goto(f"{base_url}/account")
    page.get_by_label("New email", exact=True).fill(new)
    page.get_by_label("Your password", exact=True).fill(user.password)
    follow(page, page.get_by_role("button", name="Send a link to the new address"))
    assert page.url == f"{base_url}/account?sent=new"
    assert "changes when it is opened there" in page.get_by_role("status").inner_text()
    assert page.locator(".facts .email").inner_text() == user.email  # not changed yet
    assert page.locator(".pending-email .new-email").inner_text() == new
    shoot(page, "account-email-change-sent")

    message = smtp.inbox.wait_for(new, "Confirm your new email address")
    show_message(page, message)
    follow(page, page.get_by_role("link", name="Confirm the new address"))
    assert page.get_by_role("heading", level=1).inner_text() == "Confirm your new email address"
    follow(page, page.get_by_role("button", name="Verify"))
    assert page.get_by_role("status").inner_text() == (
        f"{new} is now the email address of your account. We told the previous address."
    )
    page.goto(f"{base_url}/account")
    assert page.locator(".facts .email").inner_text() == new
    assert page.locator(".email-status").inner_text().startswith("Yes")

    notice = smtp.inbox.wait_for(user.email, "Your email address was changed")
    show_message(page, notice)
    text = page.inner_text("body")
    assert f"changed from {user.email} to {new}" in text and "If you did not" in text
    shoot(page, "email-changed-notice")
    assert mail_api.post("/v1/auth/login", json={"email": new, "password": user.password}).status_code == 200
    assert mail_api.post("/v1/auth/login", json={"email": user.email, "password": user.password}).status_code == 401
