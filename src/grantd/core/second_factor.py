"""The second factor of a sign-in: what a person who enrolled one proves after the password.

The sign-in asks three things of this module, whatever the method: ``asked_after_password``
(what the second step asks for after a right password; empty: the password alone signs the
person in), ``methods_of`` (what the person has, all of it offered once the second step is asked)
and ``amr_of`` (the session's RFC 8176 ``amr`` once a method proved itself). The sign-in page,
its pending state (``pending_sign_in``) and the session stay the same whatever the method.

Two methods:

- ``totp``: an authenticator app's one-time codes (RFC 6238 TOTP: SHA-1, 6 digits, 30 seconds; a
  code of the step before or after is accepted for clock drift), with 10 single-use recovery
  codes, checked here (``verify``).
- ``passkey``: any passkey of the account (``core.passkeys``, which checks its answer:
  ``passkeys.second_step``). A person adds one to sign in with it alone; after the password it
  is asked for only beside an authenticator app, or where the operator requires a second factor
  (``asked_after_password``).

The app's shared secret is kept sealed (``crypto.jws.KeySealer``, bound to the user); each
accepted code's time-step is recorded, and a code of that step or an earlier one is refused, so a
code works once. Recovery codes are kept as keyed hashes. Wrong codes, and passkeys refused at
the second step, count against the account (and the address) like wrong passwords (``limits``).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import pyotp

from grantd.core import audit, notices, ratelimit
from grantd.core.amr import PASSWORD_AMR
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant, InvalidRequest
from grantd.crypto.jws import InvalidSignature
from grantd.crypto.secrets import new_uuid
from grantd.store import passkeys as passkey_store, second_factor as store

TOTP = "totp"
PASSKEY = "passkey"
# RFC 8176 §2: a one-time password; more than one factor (beside amr.PASSWORD_AMR, a password).
OTP = "otp"
MFA = "mfa"
PERIOD = 30
DIGITS = 6
WINDOW = 1  # time-steps either side of now
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
PENDING_TTL = 300  # seconds between the password and the second factor
PENDING_TYPE = "grantd-second-factor+jwt"
WRONG_CODE = "The code is wrong or was used already."


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str  # base32, as an authenticator app takes it typed
    uri: str  # otpauth:// for the QR code


def amr_of(proven: tuple[str, ...]) -> tuple[str, ...]:
    """The session's ``amr`` (RFC 8176) after the password and what ``verify`` proved."""
    return PASSWORD_AMR if not proven else (*PASSWORD_AMR, *proven, MFA)


def _bound(user_id: str) -> str:
    return f"totp:{user_id}"


def _totp(ctx: Context, row) -> pyotp.TOTP:  # type: ignore[no-untyped-def]
    secret = ctx.sealer.open_bytes(row.sealed_secret, _bound(row.user_id)).decode()
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)


def limits(ctx: Context, user_id: str, address: str | None) -> list[ratelimit.Limit]:
    """The login limits, for codes: per account (by id: the second step knows no email) and address."""
    settings = ctx.settings
    window = settings.rate_limit_login_window
    found = [ratelimit.Limit(f"second-factor:account:{user_id}", settings.rate_limit_login_per_account, window)]
    if address:
        found.append(ratelimit.Limit(f"second-factor:address:{address}", settings.rate_limit_login_per_address, window))
    return found


# ---------------------------------------------------------------- what a person enrolled


async def methods_of(ctx: Context, user_id: str) -> tuple[str, ...]:
    """The second factors the person has, in the order the second step offers them: ``"totp"``
    (an authenticator app, confirmed) and ``"passkey"`` (one or more passkeys). Whether the step
    is asked at all after the password is ``asked_after_password``'s to say."""
    async with ctx.db.read() as conn:
        row = await store.totp_of(conn, user_id)
        passkeys = await passkey_store.count_of_user(conn, user_id)
    totp = (TOTP,) if row is not None and row.confirmed_at is not None else ()
    return (*totp, PASSKEY) if passkeys else totp


async def asked_after_password(ctx: Context, user_id: str) -> tuple[str, ...]:
    """The second factors the step after a right password asks for (any one of them completes
    it); empty: the password alone signs the person in.

    Two-step sign-in is the person's choice or the operator's, never a side effect of a passkey:

    - a person who set up an authenticator app (``totp``) chose it: every method they have is
      asked for (the code, the recovery codes, "Use a passkey");
    - where the operator requires a second factor (``GRANTD_REQUIRE_SECOND_FACTOR``: ``all``, or
      ``developers``, as the sign-in cannot know whether the console comes next), every method
      the person has is asked for, a passkey alone included: otherwise the console would send a
      passkey holder back to a password sign-in that never asks for it;
    - otherwise a passkey is a way to sign in without the password, not a second step: a person
      who has only passkeys signs in with the password alone (no recovery codes stand behind a
      passkey, so losing the device must not lock them out) or with a passkey alone.
    """
    methods = await methods_of(ctx, user_id)
    if TOTP in methods or ctx.settings.require_second_factor != "off":
        return methods
    return ()


async def recovery_codes_left(ctx: Context, user_id: str) -> int:
    async with ctx.db.read() as conn:
        return await store.unused_recovery_codes(conn, user_id)


# ---------------------------------------------------------------- enrolment


async def start_enrolment(ctx: Context, user_id: str, email: str) -> Enrolment:
    """A new secret, kept unconfirmed until ``confirm_enrolment``; InvalidRequest once one is enrolled."""
    if TOTP in await methods_of(ctx, user_id):
        raise InvalidRequest("An authenticator app is set up already: remove it first.")
    secret = pyotp.random_base32(32)  # 160 bits, RFC 4226 §4's recommended length
    async with ctx.db.write() as tx:
        await store.put_pending_totp(tx, user_id, ctx.sealer.seal_bytes(secret.encode(), _bound(user_id)), ctx.now())
    return _enrolment(ctx, secret, email)


async def pending_enrolment(ctx: Context, user_id: str, email: str) -> Enrolment | None:
    """The unconfirmed secret of an enrolment under way, to show again; None without one."""
    async with ctx.db.read() as conn:
        row = await store.totp_of(conn, user_id)
    if row is None or row.confirmed_at is not None:
        return None
    return _enrolment(ctx, _totp(ctx, row).secret, email)


def _enrolment(ctx: Context, secret: str, email: str) -> Enrolment:
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(name=email, issuer_name=ctx.settings.issuer)
    return Enrolment(secret, uri)


async def confirm_enrolment(ctx: Context, user_id: str, code: str, *, address: str | None = None) -> list[str]:
    """The first code from the app confirms it; the new recovery codes, shown this once, are
    returned. InvalidGrant for a wrong code, RateLimited as for sign-in codes."""
    attempt = await ctx.limiter.hit(*limits(ctx, user_id, address))
    async with ctx.db.read() as conn:
        row = await store.totp_of(conn, user_id)
    if row is None or row.confirmed_at is not None:
        raise InvalidRequest("Start setting up the authenticator app again.")
    step = _matching_step(_totp(ctx, row), code, ctx.now())
    now = ctx.now()
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    async with ctx.db.write() as tx:
        if step is None or not await store.accept_step(tx, user_id, step, confirm_at=now):
            raise InvalidGrant(WRONG_CODE)
        await store.replace_recovery_codes(tx, user_id, [_recovery_hash(ctx, c) for c in codes], now)
        await audit.record(ctx, tx, "second_factor_enrolled", actor=user_id, user_id=user_id, address=address, now=now)
        await notices.factor_added(ctx, tx, user_id, "totp")
    await ctx.limiter.refund(attempt)
    return codes


async def remove(ctx: Context, user_id: str, *, address: str | None = None) -> bool:
    """Remove the authenticator app and the recovery codes (the caller proved who asks)."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        removed = await store.remove(tx, user_id)
        if removed:
            await audit.record(ctx, tx, "second_factor_removed", actor=user_id, user_id=user_id, address=address, now=now)
            await notices.factor_removed(ctx, tx, user_id, "totp")
    return removed


# ---------------------------------------------------------------- the sign-in step


async def verify(ctx: Context, user_id: str, code: str, *, address: str | None = None) -> tuple[str, ...]:
    """A code typed at sign-in: a one-time code of the app, or a recovery code (spent). The
    ``amr`` values it proves. InvalidGrant when wrong or used; RateLimited (counted before the
    check, given back on success) once over the login limits."""
    attempt = await ctx.limiter.hit(*limits(ctx, user_id, address))
    typed = "".join(code.split())[:64]
    async with ctx.db.read() as conn:
        row = await store.totp_of(conn, user_id)
    if row is None or row.confirmed_at is None:
        raise InvalidGrant(WRONG_CODE)
    now = ctx.now()
    accepted = False
    if typed.isascii() and typed.isdigit():
        step = _matching_step(_totp(ctx, row), typed, now)
        if step is not None:
            async with ctx.db.write() as tx:
                accepted = await store.accept_step(tx, user_id, step)
    else:
        async with ctx.db.write() as tx:
            accepted = await store.spend_recovery_code(tx, user_id, _recovery_hash(ctx, typed), now)
    if not accepted:
        await audit.record_alone(
            ctx, "login_failed", actor=user_id, user_id=user_id, address=address, reason="wrong_second_factor"
        )
        raise InvalidGrant(WRONG_CODE)
    await ctx.limiter.refund(attempt)
    return (OTP,)


def _matching_step(totp: pyotp.TOTP, code: str, now: int) -> int | None:
    """The time-step within ``WINDOW`` of now whose code is ``code`` (compared in constant time)."""
    code = "".join(code.split())
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    current = now // PERIOD
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(totp.at(step * PERIOD), code):
            found = step
    return found


def _new_recovery_code() -> str:
    """10 characters of a 31-letter alphabet (about 50 bits), shown as two groups of five."""
    text = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{text[:5]}-{text[5:]}"


def _recovery_hash(ctx: Context, code: str) -> str:
    return ctx.hasher.hash("recovery code " + code.lower().replace("-", "").replace(" ", ""))


# ---------------------------------------------------------------- between the password and the code


def pending_sign_in(ctx: Context, user_id: str) -> str:
    """The signed state of a sign-in whose password was right and whose second factor is still
    to come: not a session (it opens nothing else), valid ``PENDING_TTL`` seconds."""
    now = ctx.now()
    claims = {"iss": ctx.settings.issuer, "sub": user_id, "jti": new_uuid(), "iat": now, "exp": now + PENDING_TTL}
    return ctx.signing.sign(claims, PENDING_TYPE)


@dataclass(frozen=True, slots=True)
class Pending:
    """A live pending sign-in: whose, and its own id (what a passkey's challenge is bound to)."""

    user_id: str
    jti: str


def pending(ctx: Context, token: str | None) -> Pending | None:
    """The live pending sign-in ``token`` is; None for anything else."""
    if not token or len(token) > 4096:
        return None
    try:
        claims = ctx.signing.verify(token, typ=PENDING_TYPE, issuer=ctx.settings.issuer)
    except InvalidSignature:
        return None
    sub, jti = claims.get("sub"), claims.get("jti")
    return Pending(sub, jti) if isinstance(sub, str) and isinstance(jti, str) else None
