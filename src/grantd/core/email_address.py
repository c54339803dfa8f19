"""An account's email address: proving it (verification) and changing it.

**Verification.** Every sign-up (the hosted page, Neucron v1's ``POST /auth/signup``, the
operator's CLI) queues, in the transaction that creates the account, a message with a
single-use link to the hosted page ``/email/verify?token=…``. Opening the link only shows the
address and a button; pressing it (a POST) spends the token and records the address as proven
(``users.email_verified_at``). So a mail scanner that fetches every link of a message proves
nothing and spends nothing. The account page sends a new link on request.

**Change.** A signed-in user asks for a new address, having proven who they are as for a
password change (``accounts.request_email_change``). Nothing changes yet: a link goes to the new
address, and only when its owner presses the button does the address become the account's,
verified, in one transaction that also spends every other live link of the user (a reset link
sent to the old address dies with it) and queues a notice to the old address. One change waits
at a time: asking again spends the earlier link. Whether another account has the new address
is not told: the answer, the work and the account page are the same, but no message is sent
(the address stays unique: ``users.email`` is a unique column).

Links: 256-bit random tokens, stored as keyed hashes (``email_tokens``, with the address each
proves), live ``GRANTD_EMAIL_VERIFICATION_TTL`` seconds, used at most once (one conditional
UPDATE). Sending one again, or for a change, is rate limited per account, per address mailed
and per client address.
"""

from __future__ import annotations

from dataclasses import dataclass

from grantd.core import audit, mail, ratelimit
from grantd.core.context import Context
from grantd.core.errors import Conflict, InvalidGrant, InvalidToken
from grantd.store import mail as mail_store, users

VERIFY_PURPOSE = "verify_email"
CHANGE_PURPOSE = "change_email"
PURPOSES = (VERIFY_PURPOSE, CHANGE_PURPOSE)
# Every kind of link a user's mailbox may hold: an email change spends them all.
ALL_PURPOSES = (*PURPOSES, "password_reset")
VERIFY_PATH = "/email/verify"
CHANGE_SENT = "We sent a link to the new address: the account's address changes when it is opened there."
UNUSABLE = "This link is not valid: it was used already, it expired, or a newer one replaced it."


@dataclass(frozen=True, slots=True)
class EmailLink:
    """What a live link proves: ``email``, for ``purpose`` (a verification or a change)."""

    purpose: str
    email: str

    @property
    def is_change(self) -> bool:
        return self.purpose == CHANGE_PURPOSE


def limits(ctx: Context, *, email: str, user_id: str, address: str | None) -> list[ratelimit.Limit]:
    settings = ctx.settings
    window, per_account = settings.rate_limit_email_verification_window, settings.rate_limit_email_verification_per_account
    found = [
        ratelimit.Limit(f"verify:account:{user_id}", per_account, window),
        ratelimit.Limit(f"verify:email:{email}", per_account, window),
    ]
    if address:
        found.append(ratelimit.Limit(f"verify:address:{address}", settings.rate_limit_email_verification_per_address, window))
    return found


def _lifetime(ctx: Context) -> str:
    return mail.duration(ctx.settings.email_verification_ttl)


async def queue_verification(ctx: Context, tx: object, user_id: str, email: str, now: int) -> None:
    """Queue, in the caller's transaction ``tx``, a link that proves ``email`` is the user's (a
    sign-up's ``signup`` event stands for it in the audit log)."""
    link = mail.new_link(ctx, VERIFY_PATH)
    bodies = mail.render("verify_email", issuer=ctx.settings.issuer, link=link.url, email=email, lifetime=_lifetime(ctx))
    await mail.queue_link(
        ctx, tx, link, user_id=user_id, purpose=VERIFY_PURPOSE, to=email, subject="Verify your email address",
        bodies=bodies, ttl=ctx.settings.email_verification_ttl, now=now, email=email,
    )


async def send_verification_again(ctx: Context, user_id: str, *, address: str | None = None) -> str | None:
    """The account page's "send the link again": a new link to the account's address, which is
    returned; None when the address is verified already (nothing is sent). RateLimited."""
    async with ctx.db.read() as conn:
        row = await users.by_id(conn, user_id)
    if row is None:
        raise InvalidToken("The account no longer exists.")
    if row.email_verified_at is not None:
        return None
    await ctx.limiter.hit(*limits(ctx, email=row.email, user_id=user_id, address=address))
    now = ctx.now()
    async with ctx.db.write() as tx:
        await queue_verification(ctx, tx, user_id, row.email, now)
        await audit.record(ctx, tx, "email_verification_sent", actor=user_id, user_id=user_id, address=address, now=now)
    return row.email


async def request_change(ctx: Context, user_id: str, new: str, *, address: str | None = None) -> None:
    """Send a link to ``new`` (normalized, not the user's address) that makes it the user's address. The
    caller has proven who the user is. RateLimited. When another account has ``new`` the same is
    done and recorded, but no message is sent."""
    await ctx.limiter.hit(*limits(ctx, email=new, user_id=user_id, address=address))
    link = mail.new_link(ctx, VERIFY_PATH)
    bodies = mail.render("confirm_email_change", issuer=ctx.settings.issuer, link=link.url, email=new, lifetime=_lifetime(ctx))
    now = ctx.now()
    async with ctx.db.read() as conn:
        taken = await users.by_email(conn, new) is not None
    async with ctx.db.write() as tx:
        await mail_store.spend_user_tokens(tx, user_id, now, (CHANGE_PURPOSE,))  # one change waits at a time
        await mail_store.insert_token(
            tx, token_hash=link.token_hash, user_id=user_id, purpose=CHANGE_PURPOSE, now=now,
            expires_at=now + ctx.settings.email_verification_ttl, email=new,
        )
        if not taken:
            await mail.enqueue(ctx, tx, new, "Confirm your new email address", *bodies)
        await audit.record(ctx, tx, "email_change_requested", actor=user_id, user_id=user_id, address=address, now=now)


async def pending_change(ctx: Context, user_id: str) -> str | None:
    """The address an email change of the user waits to have proven, if any."""
    async with ctx.db.read() as conn:
        return await mail_store.newest_live_email(conn, user_id, CHANGE_PURPOSE, ctx.now())


async def link_of(ctx: Context, token: str) -> EmailLink | None:
    """What a link would prove, for the page that asks to confirm it; None when it cannot be used
    (unknown, used, expired, or a verification of an address the account no longer has)."""
    async with ctx.db.read() as conn:
        found = await mail_store.live_token(conn, mail.token_hash(ctx, token), PURPOSES, ctx.now())
        user = await users.by_id(conn, found.user_id) if found is not None else None
    if found is None or user is None or found.email is None:
        return None
    if found.purpose == VERIFY_PURPOSE and found.email != user.email:
        return None
    return EmailLink(found.purpose, found.email)


async def confirm(ctx: Context, token: str, *, address: str | None = None) -> EmailLink:
    """Spend a link and do what it proves: record the address as verified, or make the new
    address the account's (verified), spend the user's other links and notify the old address.
    InvalidGrant when the link cannot be used; Conflict when another account took the new address
    meanwhile (the link is then not spent)."""
    invalid = InvalidGrant(UNUSABLE)
    token_hash = mail.token_hash(ctx, token)
    now = ctx.now()
    async with ctx.db.read() as conn:
        found = await mail_store.live_token(conn, token_hash, PURPOSES, now)
        user = await users.by_id(conn, found.user_id) if found is not None else None
    if found is None or user is None or found.email is None:
        raise invalid
    proven = EmailLink(found.purpose, found.email)
    notice = None
    if proven.is_change:
        notice = mail.render("email_changed", issuer=ctx.settings.issuer, old=user.email, new=proven.email)
    async with ctx.db.write() as tx:
        if not await mail_store.spend_token(tx, token_hash, found.purpose, now):
            raise invalid
        if notice is None:
            if not await users.mark_email_verified(tx, user.id, proven.email, now):
                raise invalid
            await audit.record(ctx, tx, "email_verified", actor=user.id, user_id=user.id, address=address, now=now)
            return proven
        changed = await users.set_verified_email(tx, user.id, user.email, proven.email, now)
        if changed is False:
            raise Conflict("Another account uses this address now: it cannot become yours.")
        if changed is None:
            raise invalid
        await mail_store.spend_user_tokens(tx, user.id, now, ALL_PURPOSES)
        await mail.enqueue(ctx, tx, user.email, "Your email address was changed", *notice)
        await audit.record(ctx, tx, "email_changed", actor=user.id, user_id=user.id, address=address, now=now)
    return proven
