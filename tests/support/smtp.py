"""A real SMTP server in-process (aiosmtpd) that keeps every message it receives: what the mail
tests (tests/test_mail.py) and the browser tests (tests/browser/test_email.py) deliver to."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """aiosmtpd's handler: keeps every message received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def received(self, to: str | None = None, subject: str | None = None) -> list[EmailMessage]:
        """The messages delivered so far, to ``to`` and with ``subject`` when given, oldest first."""
        return [
            m for m in self.messages if (to is None or m["To"] == to) and (subject is None or m["Subject"] == subject)
        ]

    def wait_for(self, to: str, subject: str, timeout: float = 30.0) -> EmailMessage:
        """The first message to ``to`` with ``subject``, waiting for a server's outbox to deliver it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(to, subject)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no message {subject!r} to {to} arrived in {timeout} s")


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
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
