"""Email that is sent: a durable outbox, and the task that delivers it.

A use case queues a message with ``enqueue`` inside its own write transaction, so the message
exists if and only if what it tells of was committed. Every server runs ``keep_sending``: it
claims the due messages one at a time with one atomic UPDATE (``store.mail.claim``: of two
processes racing for a message exactly one gets it, and holds it for ``LEASE`` seconds), sends
it, and marks it sent. A failed delivery is retried after a growing pause (``BACKOFF`` doubled per
attempt, at most ``MAX_BACKOFF``); after ``MAX_ATTEMPTS`` the message is given up, its last error
kept on the row. A process that dies mid-send leaves the claim to expire and the message is sent
again then: delivery is at least once, never twice while the senders live.

Delivery: ``GRANTD_SMTP_URL`` (``smtp://`` plain, ``smtp+starttls://`` STARTTLS); without it, each
message is written as an ``.eml`` file under ``<data_dir>/mail/`` and its path logged (the log line
holds neither the recipient nor the body: a body may carry a one-time link).

A body may carry a one-time link, so the outbox holds the bodies sealed (AES-256-GCM under a key
derived from the master secret, the message id as associated data): the database, its backups
and its free pages never hold a reset token in clear.

Messages are rendered from ``web/templates/mail/<name>.txt`` and ``<name>.html``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from functools import cache, lru_cache
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from grantd.core.context import Context
from grantd.crypto.secrets import new_secret

if TYPE_CHECKING:
    from jinja2 import Environment
from grantd.store import mail as store
from grantd.store.availability import DatabaseUnavailable

MAX_ATTEMPTS = 8
BACKOFF = 30  # seconds before the second attempt; doubled for each one after
MAX_BACKOFF = 3600
LEASE = 120  # seconds a sender holds a message it claimed
POLL = 2.0  # seconds between two looks at the outbox
BATCH = 20
SMTP_TIMEOUT = 30.0
TOKEN_MAX = 128  # a link's token is far shorter; a longer one is cut before it is hashed

log = logging.getLogger("grantd")


@cache
def _templates() -> Environment:
    """The messages' templates, made when the first message is written: Jinja2 is imported only
    then (imported with grantd, ~2 MB a process)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("grantd.web", "templates/mail"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(name: str, **values: Any) -> tuple[str, str]:
    """The text and HTML bodies of message ``name``."""
    return (
        _templates().get_template(f"{name}.txt").render(**values),
        _templates().get_template(f"{name}.html").render(**values),
    )


def duration(seconds: int) -> str:
    """A link's lifetime in a message's words: "24 hours", "1 hour", "30 minutes"."""
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "1 hour" if hours == 1 else f"{hours} hours"
    minutes = max(seconds // 60, 1)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


@lru_cache(maxsize=8)
def _aead(master_secret_digest: bytes, master_secret: bytes) -> AESGCM:
    del master_secret_digest  # the cache key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"grantd mail outbox v1").derive(master_secret)
    return AESGCM(key)


def _cipher(ctx: Context) -> AESGCM:
    master = ctx.settings.master_secret
    return _aead(hashlib.sha256(master).digest(), master)


def seal(ctx: Context, message_id: str, body: str) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + _cipher(ctx).encrypt(nonce, body.encode(), message_id.encode())).decode()


def unseal(ctx: Context, message_id: str, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    return _cipher(ctx).decrypt(raw[:12], raw[12:], message_id.encode()).decode()


@dataclass(frozen=True, slots=True)
class Link:
    """A single-use link a message carries: its token (written only into the message), the token's
    keyed hash (all the database keeps), and the URL."""

    token: str
    token_hash: str
    url: str


def new_link(ctx: Context, path: str) -> Link:
    """A new single-use link to ``path`` on this server (``path?token=…``)."""
    token = new_secret()
    return Link(token, ctx.hasher.hash(token), f"{ctx.settings.issuer.rstrip('/')}{path}?token={token}")


def token_hash(ctx: Context, token: str) -> str:
    """The stored hash of a link's token as a client sent it (cut to ``TOKEN_MAX``: no real one is longer)."""
    return ctx.hasher.hash(token[:TOKEN_MAX])


async def queue_link(
    ctx: Context,
    tx: Any,
    link: Link,
    *,
    user_id: str,
    purpose: str,
    to: str,
    subject: str,
    bodies: tuple[str, str],
    ttl: int,
    now: int,
    email: str | None = None,
) -> None:
    """Store ``link``'s token (its hash, for ``purpose``, live ``ttl`` seconds; ``email``: the
    address it proves) and queue the message that carries it, ``bodies`` (text, HTML), in ``tx``."""
    await store.insert_token(
        tx, token_hash=link.token_hash, user_id=user_id, purpose=purpose, now=now, expires_at=now + ttl, email=email
    )
    await enqueue(ctx, tx, to, subject, *bodies)


async def enqueue(ctx: Context, tx: Any, to: str, subject: str, text: str, html: str | None = None) -> str:
    """Queue a message in the caller's write transaction ``tx``; its id."""
    message_id = str(uuid.uuid4())
    await store.insert_message(
        tx, message_id=message_id, recipient=to, subject=subject, text=seal(ctx, message_id, text),
        html=seal(ctx, message_id, html) if html is not None else None, now=ctx.now(),
    )
    return message_id


def backoff(attempts: int) -> int:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return int(min(BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


def build(settings: Any, row: Any, text: str, html: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message["Date"] = formatdate(row.created_at, usegmt=True)
    message["Message-ID"] = make_msgid(idstring=row.id, domain=settings.mail_from.rpartition("@")[2] or "localhost")
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


async def _send_smtp(url: str, message: EmailMessage) -> None:
    import aiosmtplib

    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtp+starttls"):
        raise ValueError(f"GRANTD_SMTP_URL: unknown scheme {parts.scheme!r}")
    starttls = parts.scheme == "smtp+starttls"
    await aiosmtplib.send(
        message,
        hostname=parts.hostname or "localhost",
        port=parts.port or (587 if starttls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        start_tls=starttls,
        use_tls=False,
        timeout=SMTP_TIMEOUT,
    )


def _write_eml(directory: Path, name: str, message: EmailMessage) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(message.as_bytes())
    return path


async def deliver(ctx: Context, row: Any) -> None:
    """Send one message, or write it as a file when no SMTP server is configured."""
    html = unseal(ctx, row.id, row.html_body) if row.html_body else None
    message = build(ctx.settings, row, unseal(ctx, row.id, row.text_body), html)
    if ctx.settings.smtp_url:
        await _send_smtp(ctx.settings.smtp_url, message)
        log.info("mail %s sent", row.id)
    else:
        path = await asyncio.to_thread(_write_eml, ctx.settings.data_dir / "mail", f"{row.created_at}-{row.id}.eml", message)
        log.info("mail %s written to %s", row.id, path)


async def send_due(ctx: Context) -> int:
    """One pass over the outbox: claim, send and mark each due message; how many were sent."""
    sent = 0
    now = ctx.now()
    async with ctx.db.read() as conn:
        ids = await store.due_ids(conn, now, BATCH)
    for message_id in ids:
        now = ctx.now()
        async with ctx.db.write() as tx:
            mine = await store.claim(tx, message_id, now, now + LEASE)
        if not mine:
            continue  # another sender has it
        async with ctx.db.read() as conn:
            row = await store.by_id(conn, message_id)
        if row is None:
            continue
        try:
            await deliver(ctx, row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - kept on the row, retried later
            attempts = row.attempts + 1
            error = f"{type(exc).__name__}: {exc}"
            retry = ctx.now() + backoff(attempts) if attempts < MAX_ATTEMPTS else None
            async with ctx.db.write() as tx:
                await store.mark_failed(tx, message_id, next_attempt_at=retry, error=error)
            if retry is None:
                log.error("mail %s given up after %d attempts: %s", message_id, attempts, error[:200])
            else:
                log.warning("mail %s not sent (attempt %d), retrying in %d s: %s", message_id, attempts, retry - ctx.now(), error[:200])
            continue
        async with ctx.db.write() as tx:
            await store.mark_sent(tx, message_id, ctx.now())
        sent += 1
    return sent


async def keep_sending(ctx: Context) -> None:
    """A server's task: look at the outbox every ``POLL`` seconds and send what is due."""
    while True:
        try:
            await send_due(ctx)
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable:
            pass  # logged once by the store, when the outage began; the next look tries again
        except Exception:  # noqa: BLE001 - keep serving; the next look tries again
            log.exception("sending mail failed")
        await asyncio.sleep(POLL)
