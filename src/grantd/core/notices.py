"""Security notices: a message to a person when something happens to their account that they
should know of, and could stop if it was not them.

Each notice is queued in the write transaction of the change it tells of (``core.mail.enqueue``),
so that it is sent if and only if the change commits:

- ``password_changed``: from the account page, Neucron's ``PUT /auth/user/password``, or a reset link;
- ``new_device``: a sign-in on the hosted pages from a browser the account had not signed in from.
  Each browser carries a long-lived random cookie (``DEVICE_COOKIE``, set by ``grantd.web``); the
  account keeps only its keyed hash (``known_devices``). The JSON log-in of the SDKs has no such
  cookie and sends no notice;
- ``factor_added`` and ``factor_removed``: a sign-in method (a passkey, an authenticator app,
  recovery codes) added to or removed from the account.

A notice carries no link that acts: only the addresses of the account page and of the
password-reset page, which the person can also type.
"""

from __future__ import annotations

import time
from typing import Any

from grantd.core import audit, mail
from grantd.core.context import Context
from grantd.crypto.secrets import new_secret
from grantd.store import devices as device_store, users as user_store

DEVICE_COOKIE = "grantd_device"
DEVICE_COOKIE_MAX = 128  # a device cookie is far shorter; a longer one is cut before it is hashed
DEVICE_COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest a browser keeps a cookie (RFC 6265bis)
# How a sign-in method is named in a notice, by the kind its module passes.
FACTORS = {"passkey": "A passkey", "totp": "An authenticator app", "recovery_codes": "A set of recovery codes"}

SUBJECTS = {
    "password_changed": "Your password was changed",
    "new_device": "A new sign-in to your account",
    "factor_added": "A sign-in method was added to your account",
    "factor_removed": "A sign-in method was removed from your account",
}


def _when(now: int) -> str:
    return time.strftime("%d %B %Y at %H:%M UTC", time.gmtime(now))


async def _queue(ctx: Context, tx: Any, user_id: str, notice: str, now: int, **values: Any) -> bool:
    """Queue ``notice`` to the account's address in ``tx``; False when there is no such account."""
    user = await user_store.by_id(tx, user_id)
    if user is None:
        return False
    issuer = ctx.settings.issuer.rstrip("/")
    bodies = mail.render(
        notice, issuer=issuer, when=_when(now), account=f"{issuer}/account", reset=f"{issuer}/password/forgot", **values
    )
    await mail.enqueue(ctx, tx, user.email, SUBJECTS[notice], *bodies)
    return True


async def password_changed(ctx: Context, tx: Any, user_id: str, now: int, *, by_reset: bool = False) -> None:
    await _queue(ctx, tx, user_id, "password_changed", now, how=" with a password-reset link" if by_reset else "")


def _factor(kind: str) -> str:
    if kind not in FACTORS:
        raise ValueError(f"unknown sign-in method {kind!r}")
    return FACTORS[kind]


async def factor_added(ctx: Context, tx: Any, user_id: str, kind: str) -> None:
    """Tell the account ``user_id`` that a sign-in method of ``kind`` (a key of ``FACTORS``) was
    added, in the caller's write transaction ``tx``."""
    await _queue(ctx, tx, user_id, "factor_added", ctx.now(), factor=_factor(kind))


async def factor_removed(ctx: Context, tx: Any, user_id: str, kind: str) -> None:
    """Tell the account ``user_id`` that a sign-in method of ``kind`` was removed, in ``tx``."""
    await _queue(ctx, tx, user_id, "factor_removed", ctx.now(), factor=_factor(kind))


def new_device_cookie() -> str:
    return new_secret()


async def signed_in_from(ctx: Context, user_id: str, device: str, *, address: str | None = None, notify: bool = True) -> bool:
    """Record that ``user_id`` signed in from the browser whose device cookie is ``device``; when
    the account had not seen it, and ``notify`` (not at sign-up: the first browser is known by
    creating the account), queue ``new_device``. True when the browser was new to the account."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        new = await device_store.remember(tx, user_id, ctx.hasher.hash(device[:DEVICE_COOKIE_MAX]), now)
        if new and notify:
            await _queue(ctx, tx, user_id, "new_device", now, address=address)
            await audit.record(ctx, tx, "security_notice_sent", actor=user_id, user_id=user_id, address=address, now=now, reason="new_device")
    return new
