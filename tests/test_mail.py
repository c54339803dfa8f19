"""The mail outbox (grantd.core.mail): queued in a transaction, delivered by SMTP to a real
server in-process (aiosmtpd), or written as .eml files; retried while the server is down; never
sent twice by two senders. Then what it carries, end to end through the pages and the API: the
password reset, the verification of a sign-up's address, and an email change (the link to the new
address, the notice to the old one). Each test has a database of its own: SQLite, or PostgreSQL
under ``make test-db``."""

from __future__ import annotations

import asyncio
import email
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from grantd.config import Settings
from grantd.core import mail
from grantd.core.context import Context
from grantd.store.schema import mail_outbox
from support.databases import migrate, pg_execute, postgres_available
from support.smtp import SmtpServer, free_port

pytestmark = pytest.mark.db


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


@pytest.fixture(scope="module")
def postgres_template() -> Iterator[str | None]:
    """With GRANTD_TEST_DB=postgres (``make test-db``): a migrated PostgreSQL database each test's
    own is copied from; None otherwise."""
    if os.environ.get("GRANTD_TEST_DB", "sqlite") != "postgres":
        yield None
        return
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"grantd_mail_{secrets.token_hex(6)}"
    asyncio.run(pg_execute(f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"))
    yield name
    asyncio.run(pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def new_database(tmp_path: Path, postgres_template: str | None) -> AsyncIterator[str]:
    """A database of its own (the session's app sends from the shared one): SQLite, or PostgreSQL
    with GRANTD_TEST_DB=postgres, so that the outbox and the links are tested on both."""
    if postgres_template is None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'mail.db'}"
        await migrate(url)
        yield url
        return
    name = f"grantd_mail_{secrets.token_hex(6)}"
    await pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    await pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _settings(settings: Settings, **update: Any) -> Settings:
    """The session's settings with ``update``; what they cached (the database URL) forgotten."""
    copied = settings.model_copy(update=update)
    copied.__dict__.pop("resolved_database_url", None)
    assert copied.resolved_database_url == update.get("database_url", settings.database_url)
    return copied


def _context(settings: Settings, database_url: str, tmp_path: Path, smtp_url: str = "") -> Context:
    return Context.from_settings(_settings(settings, database_url=database_url, smtp_url=smtp_url, data_dir=tmp_path))


@pytest.fixture
async def ctx_factory(settings: Settings, new_database: str, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Context] = []

    def make(smtp_url: str = "") -> Context:
        ctx = _context(settings, new_database, tmp_path, smtp_url)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        await ctx.close()


async def _queue(ctx: Context, to: str = "someone@example.com", subject: str = "Hello") -> str:
    text, html = mail.render("password_reset", issuer="http://testserver", link="http://testserver/x")
    async with ctx.db.write() as tx:
        return await mail.enqueue(ctx, tx, to, subject, text, html)


async def _row(ctx: Context, message_id: str) -> Any:
    async with ctx.db.read() as conn:
        return (await conn.execute(select(mail_outbox).where(mail_outbox.c.id == message_id))).first()


async def test_a_queued_message_is_delivered_by_smtp_once(ctx_factory: Any, smtp: SmtpServer) -> None:
    ctx = ctx_factory(smtp.url)
    message_id = await _queue(ctx, subject="Reset")
    assert await mail.send_due(ctx) == 1
    assert len(smtp.inbox.messages) == 1
    received = smtp.inbox.messages[0]
    assert received["To"] == "someone@example.com"
    assert received["Subject"] == "Reset"
    assert received["From"] == ctx.settings.mail_from
    kinds = {part.get_content_type() for part in received.walk()}
    assert {"text/plain", "text/html"} <= kinds
    row = await _row(ctx, message_id)
    assert row.sent_at is not None and row.attempts == 1 and row.next_attempt_at is None
    assert await mail.send_due(ctx) == 0
    assert len(smtp.inbox.messages) == 1


async def test_the_bodies_are_sealed_at_rest(ctx_factory: Any) -> None:
    ctx = ctx_factory("")
    message_id = await _queue(ctx)
    row = await _row(ctx, message_id)
    assert "http://testserver/x" not in row.text_body and "http://testserver/x" not in row.html_body
    assert "http://testserver/x" in mail.unseal(ctx, message_id, row.text_body)


async def test_without_smtp_each_message_is_written_as_an_eml_file(
    ctx_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = ctx_factory("")
    message_id = await _queue(ctx, subject="Written")
    with caplog.at_level("INFO", logger="grantd"):
        assert await mail.send_due(ctx) == 1
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1 and message_id in files[0].name
    parsed = email.message_from_bytes(files[0].read_bytes())
    assert parsed["Subject"] == "Written"
    lines = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
    assert len(lines) == 1 and str(files[0]) in lines[0]
    assert "someone@example.com" not in lines[0] and "http://testserver/x" not in lines[0]


async def test_a_stopped_smtp_server_leaves_the_message_queued_until_it_is_back(
    ctx_factory: Any, smtp: SmtpServer
) -> None:
    ctx = ctx_factory(smtp.url)
    smtp.stop()
    message_id = await _queue(ctx)
    assert await mail.send_due(ctx) == 0
    row = await _row(ctx, message_id)
    assert row.sent_at is None and row.attempts == 1 and row.last_error
    assert row.next_attempt_at >= ctx.now() + mail.BACKOFF - 1
    assert await mail.send_due(ctx) == 0  # not due yet
    smtp.start()
    later = ctx.now() + mail.BACKOFF + 1
    ctx.now = lambda: later  # type: ignore[method-assign]
    assert await mail.send_due(ctx) == 1
    assert len(smtp.inbox.messages) == 1
    row = await _row(ctx, message_id)
    assert row.sent_at is not None and row.last_error is None


async def test_a_message_is_given_up_after_the_last_attempt(ctx_factory: Any) -> None:
    ctx = ctx_factory(f"smtp://127.0.0.1:{free_port()}")  # nobody listens
    message_id = await _queue(ctx)
    now = ctx.now()
    for attempt in range(1, mail.MAX_ATTEMPTS + 1):
        assert await mail.send_due(ctx) == 0
        row = await _row(ctx, message_id)
        assert row.attempts == attempt
        now += mail.MAX_BACKOFF + 1
        ctx.now = lambda now=now: now  # type: ignore[method-assign]
    assert row.next_attempt_at is None and row.sent_at is None and row.last_error


async def test_two_senders_never_send_one_message_twice(ctx_factory: Any, smtp: SmtpServer) -> None:
    first, second = ctx_factory(smtp.url), ctx_factory(smtp.url)
    ids = [await _queue(first, to=f"user{i}@example.com") for i in range(10)]
    counts = await asyncio.gather(*(mail.send_due(c) for c in (first, second, first, second)))
    assert sum(counts) == len(ids)
    recipients = sorted(m["To"] for m in smtp.inbox.messages)
    assert recipients == sorted(f"user{i}@example.com" for i in range(10))


async def test_the_sender_task_delivers_what_is_queued(
    ctx_factory: Any, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mail, "POLL", 0.05)
    ctx = ctx_factory(smtp.url)
    task = asyncio.create_task(mail.keep_sending(ctx))
    try:
        await _queue(ctx)
        for _ in range(100):
            if smtp.inbox.messages:
                break
            await asyncio.sleep(0.05)
        assert len(smtp.inbox.messages) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_smtp_password_is_masked(settings: Settings) -> None:
    masked = settings.model_copy(update={"smtp_url": "smtp+starttls://me:hunter2secret@mail.example.com:587"}).masked()
    assert "hunter2secret" not in masked["smtp_url"]


# ---------------------------------------------------------------- forgot password, end to end

import re  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import httpx  # noqa: E402

import secret_harvest  # noqa: E402
from grantd.server import create_app  # noqa: E402
from support.neucron import PASSWORD, sign_up, unique_email  # noqa: E402
from test_pages import form  # noqa: E402

ISSUER = "http://testserver"
ANSWER = "If an account exists for that address, we sent a link to reset its password."
NEW_PASSWORD = "a brand new passphrase"
RESET_SUBJECT = "Reset your password"
VERIFY_SUBJECT = "Verify your email address"
CHANGE_SUBJECT = "Confirm your new email address"
CHANGED_SUBJECT = "Your email address was changed"


class MailApp:
    def __init__(self, app: Any, smtp: SmtpServer) -> None:
        self.app = app
        self.smtp = smtp

    @property
    def ctx(self) -> Context:
        return self.app.state.ctx

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=ISSUER)

    def received(self, to: str | None = None, subject: str | None = None) -> list[Message]:
        return self.smtp.inbox.received(to, subject)  # type: ignore[return-value]

    async def next_message(self, count: int = 1, *, to: str | None = None, subject: str = RESET_SUBJECT) -> Message:
        """The ``count``-th message (to ``to``) with ``subject``, once the outbox has delivered it."""
        for _ in range(200):
            await mail.send_due(self.ctx)
            found = self.received(to, subject)
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no message {subject!r} arrived")

    async def settle(self) -> None:
        """Deliver whatever the outbox holds now."""
        await asyncio.sleep(0.05)
        await mail.send_due(self.ctx)


def reset_link(message: Message) -> str:
    text = next(part for part in message.walk() if part.get_content_type() == "text/plain").get_content()
    found = re.search(r"(http://testserver/password/reset\?token=[A-Za-z0-9_-]+)", text)
    assert found, text
    token = found.group(1).partition("token=")[2]
    secret_harvest.HARVEST.keep("token", token, "test_mail: a password-reset token")
    return found.group(1)


@pytest.fixture
async def mail_app(settings: Settings, new_database: str, tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[MailApp]:
    configured = _settings(
        settings, database_url=new_database, smtp_url=smtp.url, data_dir=tmp_path,
        rate_limit_password_reset_per_account=3, rate_limit_password_reset_per_address=1_000_000,
        rate_limit_email_verification_per_account=3, rate_limit_email_verification_per_address=1_000_000,
    )
    application = create_app(configured)
    async with application.router.lifespan_context(application):
        yield MailApp(application, smtp)


async def _request_on_page(browser: httpx.AsyncClient, email_address: str) -> httpx.Response:
    signin = await browser.get("/signin")
    assert 'href="/password/forgot"' in signin.text
    page = await browser.get("/password/forgot")
    assert page.status_code == 200
    return await browser.post("/password/forgot", data=form(page, "/password/forgot").data(email=email_address))


async def _set_password(browser: httpx.AsyncClient, link: str, password: str) -> httpx.Response:
    parts = urlsplit(link)
    page = await browser.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200, page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    return await browser.post("/password/reset", data=form(page, "/password/reset").data(password=password))


async def _log_in(client: httpx.AsyncClient, email_address: str, password: str) -> int:
    response = await client.post("/v1/auth/login", json={"email": email_address, "password": password})
    return response.status_code


async def test_a_password_is_reset_through_the_pages(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        user_id, token = await sign_up(browser, email_address)
        other_session = {"Authorization": f"Bearer {token}"}
        assert (await browser.get("/auth/user/info", headers=other_session)).status_code == 200
        answer = await _request_on_page(browser, email_address)
        assert answer.status_code == 200 and ANSWER in answer.text
        message = await mail_app.next_message()
        assert message["To"] == email_address
        link = reset_link(message)
        done = await _set_password(browser, link, NEW_PASSWORD)
        assert done.status_code == 200 and "Sign in with the new one" in done.text
        assert await _log_in(browser, email_address, NEW_PASSWORD) == 200
        assert await _log_in(browser, email_address, PASSWORD) == 401
        assert (await browser.get("/auth/user/info", headers=other_session)).status_code == 401  # every session ended
        # A second use of the link fails with a clear page.
        again = await browser.get(urlsplit(link).path + "?" + urlsplit(link).query)
        assert again.status_code == 400 and "cannot be used" in again.text
        page_token = link.partition("token=")[2]
        async with mail_app.browser() as other:
            fresh = await other.get("/password/forgot")
            data = form(fresh, "/password/forgot").data()
            refused = await other.post("/password/reset", data={**data, "token": page_token, "password": "yet another passphrase"})
        assert refused.status_code == 400 and "cannot be used" in refused.text
        assert await _log_in(browser, email_address, NEW_PASSWORD) == 200
    async with mail_app.ctx.db.read() as conn:
        from grantd.store.schema import audit_events

        rows = (await conn.execute(select(audit_events).where(audit_events.c.user_id == user_id))).all()
    events = [row.event for row in rows]
    assert "password_reset_requested" in events and "password_reset" in events
    assert all(email_address not in row.detail for row in rows)


async def test_a_password_is_reset_through_the_api(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        await sign_up(browser, email_address)
        for path in ("/auth/password/forgot", "/v1/auth/password/forgot"):
            answer = await browser.post(path, params={"email": email_address}, headers={"X-Identifier": "NEUCRON"})
            assert answer.status_code == 200 and answer.json() == {"message": ANSWER}
        first = reset_link(await mail_app.next_message(1))
        second = reset_link(await mail_app.next_message(2))
        assert first != second
        assert (await _set_password(browser, second, NEW_PASSWORD)).status_code == 200
        assert await _log_in(browser, email_address, NEW_PASSWORD) == 200
        # The reset link reached the address: that proves it, as a verification link would.
        login = await browser.post("/v1/auth/login", json={"email": email_address, "password": NEW_PASSWORD})
        assert (await _user_info(browser, login.json()["token"]))["is_email_verified"] is True


async def test_an_unknown_email_gets_the_same_answer_and_no_message(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        known = unique_email()
        await sign_up(browser, known)
        unknown_answer = await browser.post("/auth/password/forgot", params={"email": unique_email()})
        known_answer = await browser.post("/auth/password/forgot", params={"email": known})
        assert unknown_answer.status_code == known_answer.status_code == 200
        assert unknown_answer.json() == known_answer.json()
        page = await _request_on_page(browser, unique_email())
        assert page.status_code == 200 and ANSWER in page.text
        await mail_app.next_message(1)
        await mail_app.settle()
        assert [m["To"] for m in mail_app.received(subject=RESET_SUBJECT)] == [known]


async def test_a_weak_new_password_is_refused_and_leaves_the_link_usable(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        await sign_up(browser, email_address)
        await browser.post("/auth/password/forgot", params={"email": email_address})
        link = reset_link(await mail_app.next_message())
        weak = await _set_password(browser, link, "short")
        assert weak.status_code == 400 and "too weak" in weak.text
        assert (await _set_password(browser, link, NEW_PASSWORD)).status_code == 200


async def test_an_expired_link_is_refused(mail_app: MailApp) -> None:
    from sqlalchemy import update

    from grantd.store.schema import email_tokens

    async with mail_app.browser() as browser:
        email_address = unique_email()
        user_id, _ = await sign_up(browser, email_address)
        await browser.post("/auth/password/forgot", params={"email": email_address})
        link = reset_link(await mail_app.next_message())
        async with mail_app.ctx.db.write() as tx:
            await tx.execute(update(email_tokens).where(email_tokens.c.user_id == user_id).values(expires_at=mail_app.ctx.now() - 1))
        parts = urlsplit(link)
        assert (await browser.get(f"{parts.path}?{parts.query}")).status_code == 400
        assert await _log_in(browser, email_address, PASSWORD) == 200


async def test_reset_requests_are_rate_limited_per_email(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        await sign_up(browser, email_address)
        answers = [
            (await browser.post("/auth/password/forgot", params={"email": email_address})).status_code for _ in range(4)
        ]
        assert answers == [200, 200, 200, 429]
        page = await _request_on_page(browser, email_address)
        assert page.status_code == 429


# ---------------------------------------------------------------- email verification, end to end

from sqlalchemy import update  # noqa: E402

from grantd.core import profile  # noqa: E402
from grantd.store.schema import email_tokens  # noqa: E402
from test_pages import assert_redirect, sign_in  # noqa: E402

V2_SDK = {"X-Neucron-SDK": "neucron-ts-sdk/2.2.3"}
VERIFIED_TEXT = "is verified"


def verify_link(message: Message) -> str:
    """The path and query of the /email/verify link in a message's text and HTML bodies (the same one)."""
    parts = {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}
    found = re.search(r"http://testserver(/email/verify\?token=[A-Za-z0-9_-]+)", parts["text/plain"])
    assert found, parts["text/plain"]
    assert f'href="{ISSUER}{found.group(1)}"' in parts["text/html"]
    secret_harvest.HARVEST.keep("token", found.group(1).partition("token=")[2], "test_mail: an email-verification token")
    return found.group(1)


async def _user_info(browser: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await browser.get("/v1/auth/user/info", headers={"Authorization": token, **V2_SDK})
    assert response.status_code == 200, response.text
    return response.json()


async def _press_verify(browser: httpx.AsyncClient, link: str) -> httpx.Response:
    """Open the link as a person does (GET), then press its button (the POST that spends it)."""
    page = await browser.get(link)
    assert page.status_code == 200, page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    return await browser.post("/email/verify", data=form(page, "/email/verify").data())


async def _sign_up_on_page(browser: httpx.AsyncClient, email_address: str) -> None:
    page = await browser.get("/signup")
    response = await browser.post("/signup", data=form(page, "/signup").data(email=email_address, password=PASSWORD))
    assert assert_redirect(response) == "/"


async def _expire_links(mail_app: MailApp, user_id: str) -> None:
    async with mail_app.ctx.db.write() as tx:
        await tx.execute(update(email_tokens).where(email_tokens.c.user_id == user_id).values(expires_at=mail_app.ctx.now() - 1))


async def test_the_hosted_sign_up_sends_a_link_that_verifies_the_address_once(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        await _sign_up_on_page(browser, email_address)
        account = await browser.get("/account")
        assert "Not yet: open the link we sent" in account.text
        login = await browser.post("/v1/auth/login", json={"email": email_address, "password": PASSWORD})
        token = login.json()["token"]
        assert (await _user_info(browser, token))["is_email_verified"] is False

        message = await mail_app.next_message(to=email_address, subject=VERIFY_SUBJECT)
        assert message["From"] == mail_app.ctx.settings.mail_from
        link = verify_link(message)
        # Opening the link (a mail scanner fetching it, twice) verifies nothing and spends nothing.
        for _ in range(2):
            shown = await browser.get(link)
            assert shown.status_code == 200 and email_address in shown.text and "Verify" in shown.text
        assert (await _user_info(browser, token))["is_email_verified"] is False
        # Pressing the button does, once.
        done = await _press_verify(browser, link)
        assert done.status_code == 200 and VERIFIED_TEXT in done.text and email_address in done.text
        assert (await _user_info(browser, token))["is_email_verified"] is True
        user_id = (await _user_info(browser, token))["id"]
        assert (await profile.profile_of(mail_app.ctx, user_id)).email_verified is True
        assert "Yes: you opened the link" in (await browser.get("/account")).text
        # The link is spent: opening or pressing it again is refused with a page, not an error.
        again = await browser.get(link)
        assert again.status_code == 400 and "cannot be used" in again.text
        page = await browser.get("/password/forgot")  # any page: a fresh CSRF token for the pre-session cookie
        csrf = form(page, "/password/forgot").data()["csrf_token"]
        replay = await browser.post("/email/verify", data={"csrf_token": csrf, "token": link.partition("token=")[2]})
        assert replay.status_code == 400 and "cannot be used" in replay.text


async def test_openid_connect_tells_an_app_once_the_address_is_verified(mail_app: MailApp) -> None:
    """``email_verified`` in the ID token and at UserInfo is the profile's, as the link set it."""
    from test_openid_connect import code_flow, new_rp, verified

    async with mail_app.browser() as browser:
        email_address = unique_email()
        await _sign_up_on_page(browser, email_address)
        rp = await new_rp(browser)
        before, _ = await code_flow(browser, browser, rp, email_address, scope="openid email")
        assert (await verified(browser, before["id_token"], rp.client_id))["email_verified"] is False
        await _press_verify(browser, verify_link(await mail_app.next_message(to=email_address, subject=VERIFY_SUBJECT)))
        after, _ = await code_flow(browser, browser, rp, email_address, scope="openid email")
        claims = await verified(browser, after["id_token"], rp.client_id)
        assert claims["email"] == email_address and claims["email_verified"] is True
        info = await browser.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {after['access_token']}"})
        assert info.json()["email_verified"] is True


async def test_the_neucron_v1_sign_up_sends_a_verification_link_too(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        _, token = await sign_up(browser, email_address)
        link = verify_link(await mail_app.next_message(to=email_address, subject=VERIFY_SUBJECT))
        assert (await _press_verify(browser, link)).status_code == 200
        info = await _user_info(browser, token)
        assert info["email"] == email_address and info["is_email_verified"] is True


async def test_an_expired_verification_link_is_refused(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        user_id, token = await sign_up(browser, email_address)
        link = verify_link(await mail_app.next_message(to=email_address, subject=VERIFY_SUBJECT))
        page = await browser.get(link)  # opened in time…
        await _expire_links(mail_app, user_id)
        late = await browser.post("/email/verify", data=form(page, "/email/verify").data())  # …pressed too late
        assert late.status_code == 400 and "cannot be used" in late.text
        assert (await browser.get(link)).status_code == 400
        assert (await _user_info(browser, token))["is_email_verified"] is False


async def test_a_new_link_is_sent_on_request_and_rate_limited_per_account(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        email_address = unique_email()
        await _sign_up_on_page(browser, email_address)
        answers = []
        for _ in range(4):
            account = await browser.get("/account")
            response = await browser.post("/account/email/verify", data=form(account, "/account/email/verify").data())
            answers.append(response.status_code)
        assert answers == [303, 303, 303, 429]  # GRANTD_RATE_LIMIT_EMAIL_VERIFICATION_PER_ACCOUNT is 3 here
        assert "Too many links were sent" in response.text and int(response.headers["retry-after"]) > 0
        sent = await browser.get("/account?sent=1")
        assert "We sent a new link" in sent.text
        # The sign-up's link and the three sent again: each works, the newest as well as the first.
        fourth = await mail_app.next_message(4, to=email_address, subject=VERIFY_SUBJECT)
        assert (await _press_verify(browser, verify_link(fourth))).status_code == 200
        first = mail_app.received(email_address, VERIFY_SUBJECT)[0]
        assert (await _press_verify(browser, verify_link(first))).status_code == 200
        # Verified: the account page offers no new link, and asking anyway sends none.
        account = await browser.get("/account")
        assert 'action="/account/email/verify"' not in account.text
        csrf = form(account, "/account/profile").data()["csrf_token"]
        assert assert_redirect(await browser.post("/account/email/verify", data={"csrf_token": csrf})) == "/account?sent=1"
        await mail_app.settle()
        assert len(mail_app.received(email_address, VERIFY_SUBJECT)) == 4


async def test_bad_verification_requests_get_a_page_not_an_error(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        for query in ("", "?token=", "?token=nope", "?token=" + "x" * 5000, "?token=a&token=b"):
            response = await browser.get("/email/verify" + query)
            assert response.status_code == 400 and "cannot be used" in response.text, query
        page = await browser.get("/password/forgot")
        csrf = form(page, "/password/forgot").data()["csrf_token"]
        assert (await browser.post("/email/verify", data={"csrf_token": csrf})).status_code == 400
        assert (await browser.post("/email/verify", data={"csrf_token": csrf, "token": "x" * 5000})).status_code == 400
        assert (await browser.post("/email/verify", data={"token": "nope"})).status_code == 403
        assert (await browser.post("/email/verify", content=b"\xff\xfe", headers={"content-type": "text/plain"})).status_code < 500


# ---------------------------------------------------------------- email change, end to end


async def _change_on_page(browser: httpx.AsyncClient, new: str, password: str = PASSWORD) -> httpx.Response:
    account = await browser.get("/account")
    return await browser.post(
        "/account/email", data=form(account, "/account/email").data(new_email=new, email_password=password)
    )


async def test_an_email_change_takes_effect_when_the_new_address_confirms_and_the_old_one_is_told(
    mail_app: MailApp,
) -> None:
    async with mail_app.browser() as browser:
        old, new = unique_email(), unique_email()
        await _sign_up_on_page(browser, old)
        assert (await _press_verify(browser, verify_link(await mail_app.next_message(to=old, subject=VERIFY_SUBJECT)))).status_code == 200
        # A reset link sent to the old address before the change…
        await browser.post("/auth/password/forgot", params={"email": old})
        old_reset = reset_link(await mail_app.next_message(to=old))

        assert assert_redirect(await _change_on_page(browser, new)) == "/account?sent=new"
        account = await browser.get("/account?sent=new")
        assert "changes when it is opened there" in account.text
        assert new in account.text and "waiting for you to open the link" in account.text
        # Nothing changed yet: the old address signs in, the new one does not.
        assert await _log_in(browser, old, PASSWORD) == 200
        assert await _log_in(browser, new, PASSWORD) == 401

        message = await mail_app.next_message(to=new, subject=CHANGE_SUBJECT)
        link = verify_link(message)
        shown = await browser.get(link)
        assert "Confirm your new email address" in shown.text and new in shown.text
        done = await browser.post("/email/verify", data=form(shown, "/email/verify").data())
        assert done.status_code == 200 and "is now the email address of your account" in done.text

        assert await _log_in(browser, new, PASSWORD) == 200
        assert await _log_in(browser, old, PASSWORD) == 401
        login = await browser.post("/v1/auth/login", json={"email": new, "password": PASSWORD})
        info = await _user_info(browser, login.json()["token"])
        assert info["email"] == new and info["is_email_verified"] is True
        # The old address is told, with what to do if it was not them.
        notice = await mail_app.next_message(to=old, subject=CHANGED_SUBJECT)
        text = notice.get_body(("plain",)).get_content()
        assert old in text and new in text and "If you did not" in text
        assert "token=" not in text
        # …and every link sent before the change is dead.
        parts = urlsplit(old_reset)
        assert (await browser.get(f"{parts.path}?{parts.query}")).status_code == 400
        assert (await browser.get(link)).status_code == 400
        assert new in (await browser.get("/account")).text


async def test_an_email_change_over_the_v2_api_needs_a_fresh_sign_in(
    mail_app: MailApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mail_app.browser() as browser:
        old, new = unique_email(), unique_email()
        _, token = await sign_up(browser, old)
        headers = {"Authorization": token, **V2_SDK}
        # The same address (as an SDK sends the whole profile back): nothing to prove, nothing sent.
        same = await browser.put("/v1/auth/user/update", json={"email": old.upper(), "first_name": "Ada"}, headers=headers)
        assert same.status_code == 200 and same.json() == {"message": "Profile updated."}
        for bad in ("not an address", "a@b", 3):
            refused = await browser.put("/v1/auth/user/update", json={"email": bad}, headers=headers)
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_request", bad
        # A session signed in long ago may not move the account to another address.
        later = mail_app.ctx.now() + 3600
        monkeypatch.setattr(mail_app.ctx, "now", lambda: later)
        stale = await browser.put("/v1/auth/user/update", json={"email": new, "first_name": "Eve"}, headers=headers)
        assert stale.status_code == 401 and stale.json()["error"] == "insufficient_user_authentication"
        assert (await _user_info(browser, token))["first_name"] == "Ada"  # nothing of that request was done
        monkeypatch.undo()
        answer = await browser.put("/v1/auth/user/update", json={"email": new}, headers=headers)
        assert answer.status_code == 200 and "We sent a link to the new address" in answer.json()["message"]
        assert (await _user_info(browser, token))["email"] == old
        link = verify_link(await mail_app.next_message(to=new, subject=CHANGE_SUBJECT))
        assert (await _press_verify(browser, link)).status_code == 200
        info = await _user_info(browser, token)
        assert info["email"] == new and info["is_email_verified"] is True
        await mail_app.next_message(to=old, subject=CHANGED_SUBJECT)


async def test_a_change_to_a_taken_address_is_answered_alike_and_sends_nothing(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser, mail_app.browser() as other:
        taken, free = unique_email(), unique_email()
        await sign_up(other, taken)
        await _sign_up_on_page(browser, unique_email())
        answers = [await _change_on_page(browser, address) for address in (taken, free)]
        assert [assert_redirect(a) for a in answers] == ["/account?sent=new"] * 2
        await mail_app.next_message(to=free, subject=CHANGE_SUBJECT)
        await mail_app.settle()
        assert mail_app.received(taken, CHANGE_SUBJECT) == []
        # A wrong password or the same address: said on the form, nothing sent.
        wrong = await _change_on_page(browser, unique_email(), "not my password")
        assert wrong.status_code == 400 and "The current password is wrong." in wrong.text
        empty = await _change_on_page(browser, "", "")
        assert empty.status_code == 400 and "Enter the new email address." in empty.text


async def test_an_address_taken_before_the_link_is_pressed_is_refused_with_a_page(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser, mail_app.browser() as other:
        new = unique_email()
        await _sign_up_on_page(browser, unique_email())
        assert_redirect(await _change_on_page(browser, new))
        link = verify_link(await mail_app.next_message(to=new, subject=CHANGE_SUBJECT))
        await sign_up(other, new)  # someone else signs up with it meanwhile
        refused = await _press_verify(browser, link)
        assert refused.status_code == 409 and "cannot become yours" in refused.text


async def test_email_changes_are_rate_limited_per_account(mail_app: MailApp) -> None:
    async with mail_app.browser() as browser:
        await _sign_up_on_page(browser, unique_email())
        codes = [(await _change_on_page(browser, unique_email())).status_code for _ in range(4)]
        assert codes == [303, 303, 303, 429]
        # Only the newest change waits: the earlier links are spent.
        await mail_app.settle()
        links = [verify_link(m) for m in mail_app.received(subject=CHANGE_SUBJECT)]
        assert len(links) == 3
        assert [(await browser.get(link)).status_code for link in links] == [400, 400, 200]
