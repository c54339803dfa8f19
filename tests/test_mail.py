"""The mail outbox (grantd.core.mail): queued in a transaction, delivered by SMTP to a real
server in-process (aiosmtpd), or written as .eml files; retried while the server is down; never
sent twice by two senders."""

from __future__ import annotations

import asyncio
import email
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from grantd.config import Settings
from grantd.core import mail
from grantd.core.context import Context
from grantd.store.schema import mail_outbox
from support.databases import migrate

pytestmark = pytest.mark.db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """aiosmtpd's handler: keeps every message received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


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
async def new_database(tmp_path: Path) -> str:
    """A database of its own: the session's app sends from the shared one."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'mail.db'}"
    await migrate(url)
    return url


def _context(settings: Settings, database_url: str, tmp_path: Path, smtp_url: str = "") -> Context:
    return Context.from_settings(
        settings.model_copy(update={"database_url": database_url, "smtp_url": smtp_url, "data_dir": tmp_path})
    )


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
    ctx = ctx_factory(f"smtp://127.0.0.1:{_free_port()}")  # nobody listens
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
