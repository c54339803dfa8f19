"""The mail outbox's statements (``grantd.core.mail`` holds the rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Row

from grantd.store.schema import email_tokens, mail_outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_message(
    conn: AsyncConnection, *, message_id: str, recipient: str, subject: str, text: str, html: str | None, now: int
) -> None:
    await conn.execute(
        insert(mail_outbox).values(
            id=message_id, recipient=recipient, subject=subject, text_body=text, html_body=html,
            created_at=now, attempts=0, next_attempt_at=now,
        )
    )


def _due(now: int):  # type: ignore[no-untyped-def]
    return and_(
        mail_outbox.c.next_attempt_at <= now,
        mail_outbox.c.sent_at.is_(None),
        or_(mail_outbox.c.claimed_until.is_(None), mail_outbox.c.claimed_until < now),
    )


async def due_ids(conn: AsyncConnection, now: int, limit: int) -> list[str]:
    query = select(mail_outbox.c.id).where(_due(now)).order_by(mail_outbox.c.next_attempt_at).limit(limit)
    return [row.id for row in (await conn.execute(query)).all()]


async def claim(conn: AsyncConnection, message_id: str, now: int, until: int) -> bool:
    """Hold the message until ``until``, if it is still due and nobody holds it: one UPDATE, so of
    two senders racing for it exactly one gets it."""
    result = await conn.execute(
        update(mail_outbox).where(mail_outbox.c.id == message_id, _due(now)).values(claimed_until=until)
    )
    return result.rowcount == 1


async def by_id(conn: AsyncConnection, message_id: str) -> Row | None:
    return (await conn.execute(select(mail_outbox).where(mail_outbox.c.id == message_id))).first()


async def mark_sent(conn: AsyncConnection, message_id: str, now: int) -> None:
    await conn.execute(
        update(mail_outbox)
        .where(mail_outbox.c.id == message_id)
        .values(sent_at=now, next_attempt_at=None, claimed_until=None, attempts=mail_outbox.c.attempts + 1, last_error=None)
    )


async def mark_failed(conn: AsyncConnection, message_id: str, *, next_attempt_at: int | None, error: str) -> None:
    """``next_attempt_at`` None: given up."""
    await conn.execute(
        update(mail_outbox)
        .where(mail_outbox.c.id == message_id)
        .values(
            next_attempt_at=next_attempt_at, claimed_until=None,
            attempts=mail_outbox.c.attempts + 1, last_error=error[:200],
        )
    )


async def insert_token(
    conn: AsyncConnection,
    *,
    token_hash: str,
    user_id: str,
    purpose: str,
    now: int,
    expires_at: int,
    email: str | None = None,
) -> None:
    """``email``: the address the link proves (a verification, an email change)."""
    await conn.execute(
        insert(email_tokens).values(
            token_hash=token_hash, user_id=user_id, purpose=purpose, created_at=now, expires_at=expires_at, email=email
        )
    )


def _for(purpose: str | tuple[str, ...]):  # type: ignore[no-untyped-def]
    return email_tokens.c.purpose.in_(purpose) if isinstance(purpose, tuple) else email_tokens.c.purpose == purpose


async def live_token(conn: AsyncConnection, token_hash: str, purpose: str | tuple[str, ...], now: int) -> Row | None:
    """The token, if unused and unexpired and for ``purpose`` (or one of them)."""
    query = select(email_tokens).where(
        email_tokens.c.token_hash == token_hash,
        _for(purpose),
        email_tokens.c.used_at.is_(None),
        email_tokens.c.expires_at > now,
    )
    return (await conn.execute(query)).first()


async def spend_token(conn: AsyncConnection, token_hash: str, purpose: str, now: int) -> bool:
    """Mark the token used, if it is still unused and unexpired: one UPDATE, so of two uses at
    once exactly one succeeds."""
    result = await conn.execute(
        update(email_tokens)
        .where(
            email_tokens.c.token_hash == token_hash,
            email_tokens.c.purpose == purpose,
            email_tokens.c.used_at.is_(None),
            email_tokens.c.expires_at > now,
        )
        .values(used_at=now)
    )
    return result.rowcount == 1


async def spend_user_tokens(conn: AsyncConnection, user_id: str, now: int, purposes: tuple[str, ...]) -> int:
    """Mark every live token of the user for one of ``purposes`` used; how many."""
    result = await conn.execute(
        update(email_tokens)
        .where(
            email_tokens.c.user_id == user_id,
            _for(purposes),
            email_tokens.c.used_at.is_(None),
            email_tokens.c.expires_at > now,
        )
        .values(used_at=now)
    )
    return result.rowcount


async def newest_live_email(conn: AsyncConnection, user_id: str, purpose: str, now: int) -> str | None:
    """The address of the user's newest live token for ``purpose`` (an email change waiting for its link)."""
    query = (
        select(email_tokens.c.email)
        .where(
            email_tokens.c.user_id == user_id,
            email_tokens.c.purpose == purpose,
            email_tokens.c.used_at.is_(None),
            email_tokens.c.expires_at > now,
        )
        .order_by(email_tokens.c.created_at.desc())
        .limit(1)
    )
    return (await conn.execute(query)).scalar()
