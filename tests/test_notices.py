"""Security notices by email: a real `grantd serve` delivering to an SMTP server in-process tells a
person of a password change (account page, reset link) and of a sign-in from a browser their
account had not seen (once per browser); the sign-in methods' notices are queued in the caller's
transaction and delivered."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from grantd.config import Settings
from grantd.core import mail, notices
from grantd.core.context import Context
from support.neucron import PASSWORD, sign_up, unique_email
from support.servers import TIMEOUT, ServerProcess
from support.smtp import SmtpServer
from test_pages import form, sign_in

pytestmark = pytest.mark.db

NEW_SIGN_IN = "A new sign-in to your account"
PASSWORD_CHANGED = "Your password was changed"


@pytest.fixture(autouse=True)
def _quiet_smtp_server_log() -> Iterator[None]:
    """aiosmtpd logs what it receives at DEBUG: not into the suite's log, where the secret scan looks."""
    logger = logging.getLogger("mail.log")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess], database_url: str, smtp: SmtpServer) -> ServerProcess:
    return server_factory(database_url, env={"GRANTD_SMTP_URL": smtp.url})


def text_of(message: Any) -> str:
    return message.get_body(("plain",)).get_content()


def wait_for_count(smtp: SmtpServer, to: str, subject: str, count: int, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = smtp.inbox.received(to, subject)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{count} messages {subject!r} to {to} did not arrive in {timeout} s")


async def test_a_new_browser_is_told_of_once_and_a_password_change_always(server: ServerProcess, smtp: SmtpServer) -> None:
    email = unique_email()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as api:
        await sign_up(api, email)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as laptop,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as phone,
    ):
        assert (await sign_in(laptop, email, "/account")).status_code == 303
        first = smtp.inbox.wait_for(email, NEW_SIGN_IN)
        assert "had not seen before" in text_of(first) and "127.0.0.1" in text_of(first)
        assert "grantd_device" in laptop.cookies
        # The same browser again, after signing out: known, no notice.
        page = await laptop.get("/account")
        signed_out = await laptop.post("/signout", data={"csrf_token": form(page, "/account/password").data()["csrf_token"]})
        assert signed_out.status_code in (200, 303), signed_out.text
        assert (await sign_in(laptop, email, "/account")).status_code == 303
        # Another browser: a notice. It is queued after the laptop's second sign-in, so once it
        # has arrived, a notice for that sign-in would have too.
        assert (await sign_in(phone, email, "/account")).status_code == 303
        both = wait_for_count(smtp, email, NEW_SIGN_IN, 2)
        assert len(both) == 2

        page = await phone.get("/account")
        changed = await phone.post(
            "/account/password",
            data=form(page, "/account/password").data(current_password=PASSWORD, new_password="a fresh passphrase 42"),
        )
        assert changed.status_code == 303, changed.text
        notice = smtp.inbox.wait_for(email, PASSWORD_CHANGED)
        text = text_of(notice)
        assert "was changed, on" in text and f"{server.base_url}/password/forgot" in text
        assert "a fresh passphrase 42" not in notice.as_string()
        assert len(smtp.inbox.received(email, NEW_SIGN_IN)) == 2


async def test_a_reset_password_is_told_of(server: ServerProcess, smtp: SmtpServer) -> None:
    email = unique_email()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as browser:
        await sign_up(browser, email)
        page = await browser.get("/password/forgot")
        asked = await browser.post("/password/forgot", data=form(page, "/password/forgot").data(email=email))
        assert asked.status_code in (200, 303), asked.text
        link = re.search(r"https?://\S+/password/reset\?token=\S+", text_of(smtp.inbox.wait_for(email, "Reset your password")))
        assert link is not None
        reset_page = await browser.get(link.group(0).replace(server.base_url, ""))
        assert reset_page.status_code == 200, reset_page.text
        reset = await browser.post("/password/reset", data=form(reset_page, "/password/reset").data(password="another passphrase 7"))
        assert reset.status_code in (200, 303), reset.text
        assert "with a password-reset link" in text_of(smtp.inbox.wait_for(email, PASSWORD_CHANGED))


async def test_sign_in_methods_added_and_removed_are_told_of(
    settings: Settings, database_url: str, client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    email = unique_email()
    user_id, _ = await sign_up(client, email)
    ctx = Context.from_settings(settings.model_copy(update={"smtp_url": smtp.url}))
    try:
        async with ctx.db.write() as tx:
            await notices.factor_added(ctx, tx, user_id, "passkey")
        async with ctx.db.write() as tx:
            await notices.factor_removed(ctx, tx, user_id, "totp")
        with pytest.raises(ValueError):
            async with ctx.db.write() as tx:
                await notices.factor_added(ctx, tx, user_id, "sms")
        await mail.send_due(ctx)
        added = text_of(smtp.inbox.wait_for(email, "A sign-in method was added to your account"))
        removed = text_of(smtp.inbox.wait_for(email, "A sign-in method was removed from your account"))
    finally:
        await ctx.close()
    assert added.startswith("A passkey was added to your http://testserver account")
    assert removed.startswith("An authenticator app was removed from your http://testserver account")
