"""Users: sign-up, log-in, log-out, and who a bearer token belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from grantd.core.amr import PASSWORD_AMR, stored_amr
from grantd.core import audit, email_address, mail, notices, ratelimit, second_factor
from grantd.core.context import Context
from grantd.core.errors import (
    Conflict,
    InsufficientUserAuthentication,
    InteractionRequired,
    InvalidGrant,
    InvalidRequest,
    InvalidToken,
)
from grantd.crypto.jws import InvalidSignature
from grantd.crypto.passwords import hash_password, verify_password
from grantd.crypto.secrets import new_uuid
from grantd.store import mail as mail_store, tokens as token_store, users as store

USER_TOKEN_TYPE = "JWT"
PASSWORD_MAX_LENGTH = 256
# How recently a session must have been signed in to change the password without the current one.
FRESH_SIGN_IN = 300
# A password-reset link's lifetime, seconds.
RESET_TOKEN_TTL = 3600
RESET_PURPOSE = "password_reset"
RESET_REQUESTED = "If an account exists for that address, we sent a link to reset its password."
_COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "12345678", "123456789", "1234567890", "qwertyui",
        "qwerty123", "iloveyou", "11111111", "00000000", "abcd1234", "letmein1", "welcome1", "admin123",
        "passw0rd", "p@ssw0rd", "sunshine", "football", "baseball", "princess", "trustno1",
    }
)


@dataclass(frozen=True, slots=True)
class UserToken:
    user_id: str
    access_token: str
    expires_at: int
    jti: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in user, as proven by a live user token."""

    user_id: str
    jti: str
    issued_at: int = 0  # when the user signed in for this token (its ``iat``)
    amr: tuple[str, ...] = PASSWORD_AMR  # how (RFC 8176), as the session recorded it


def normalize_email(email: str) -> str:
    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidRequest(f"email is not a valid email address: {exc}", field="email") from None
    return result.normalized.lower()


def password_rule(min_length: int) -> str:
    """The rule of ``check_password_strength`` in words, for a form's hint."""
    return f"At least {min_length} characters; not a common password, and not your email address."


def check_password_strength(password: str, email: str, min_length: int) -> None:
    """The one password rule: sign-up (API, pages, CLI) and password change all apply it."""
    if len(password) < min_length:
        raise InvalidRequest(f"password is too weak: use at least {min_length} characters.", field="password")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidRequest(f"password is too long: use at most {PASSWORD_MAX_LENGTH} characters.", field="password")
    if password.lower() in _COMMON_PASSWORDS or len(set(password)) < 4:
        raise InvalidRequest("password is too weak: it is too common or too repetitive.", field="password")
    if password.lower() == email.lower() or password.lower() == email.split("@")[0].lower():
        raise InvalidRequest("password is too weak: it may not be your email address.", field="password")


async def sign_up(
    ctx: Context, email: str, password: str, *, address: str | None = None, operator: bool = False
) -> UserToken:
    """``address``: the client's, for the sign-up rate limit and the audit log (None: not limited, as for
    the operator's CLI). ``operator``: the account is created by the operator, who is the audit's actor."""
    await ctx.limiter.hit(*ratelimit.signup_limits(ctx.settings, address))
    email = normalize_email(email)
    check_password_strength(password, email, ctx.settings.password_min_length)
    password_hash = await hash_password(password)
    user_id = new_uuid()
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.insert_user(tx, user_id=user_id, email=email, password_hash=password_hash, now=now):
            raise Conflict("An account with this email already exists.")
        await audit.record(
            ctx, tx, "signup", actor=audit.OPERATOR if operator else user_id, user_id=user_id, address=address, now=now
        )
        await email_address.queue_verification(ctx, tx, user_id, email, now)
        return await _issue_user_token(ctx, tx, user_id, now)


async def create_user(ctx: Context, email: str, password: str) -> str:
    """The operator's `grantd users create`: the same rules as sign-up, no token."""
    return (await sign_up(ctx, email, password, operator=True)).user_id


HOSTED_SIGN_IN_NEEDED = (
    "This account signs in with a second factor, which this call cannot carry: sign in on the hosted "
    "sign-in page (/signin, or an OAuth 2.0 authorization request) instead."
)


async def log_in(ctx: Context, email: str, password: str, *, address: str | None = None) -> UserToken:
    """The JSON log-in (Neucron's ``POST /auth/login``): a session from the password alone. An
    account whose password sign-in asks for a second factor (``second_factor.asked_after_password``:
    an authenticator app, or a passkey where the operator requires a second factor), or every
    account where the operator requires one of all, cannot sign in so: InteractionRequired, after
    the password was found right (so a wrong password still tells nothing about the account). A
    person who has only passkeys, where none is required, logs in with the password."""
    user = await check_password(ctx, email, password, address=address)
    if ctx.settings.require_second_factor == "all" or await second_factor.asked_after_password(ctx, user.id):
        raise InteractionRequired(HOSTED_SIGN_IN_NEEDED)
    return await start_session(ctx, user.id, PASSWORD_AMR, address=address)


async def check_password(ctx: Context, email: str, password: str, *, address: str | None = None):  # type: ignore[no-untyped-def]
    """The account of ``email`` if ``password`` is its password; InvalidGrant otherwise.
    ``address``: the client's, for the per-address rate limit. The attempt is counted before the
    password is checked (RateLimited, before argon2, once over a limit) and given back on success."""
    # RFC 6749 §5.2 names wrong resource-owner credentials invalid_grant; the spec's status for them is 401.
    invalid = InvalidGrant("Wrong email or password.")
    try:
        email = normalize_email(email)
    except InvalidRequest:
        email = ""
    attempt = await ctx.limiter.hit(*ratelimit.login_limits(ctx.settings, email, address))
    async with ctx.db.read() as conn:
        user = await store.by_email(conn, email) if email else None
    # An unknown email costs the same argon2 verification as a wrong password.
    if not await verify_password(user.password_hash if user else None, password[:PASSWORD_MAX_LENGTH]) or user is None:
        # One small write either way, so a known and an unknown email still cost the same.
        await audit.record_alone(
            ctx,
            "login_failed",
            actor=audit.ANONYMOUS,
            user_id=user.id if user else None,
            address=address,
            reason="wrong_password" if user else "unknown_account",
        )
        raise invalid
    await ctx.limiter.refund(attempt)
    await refuse_locked(ctx, user, address)
    return user


async def start_session(
    ctx: Context, user_id: str, amr: tuple[str, ...], *, address: str | None = None, reason: str | None = None
) -> UserToken:
    """A new session of a person who proved who they are (``amr``, RFC 8176: how), audited as
    ``login_succeeded`` (``reason``: a way other than the password, ``passkey``)."""
    now = ctx.now()
    extra = {"reason": reason} if reason is not None else {}
    async with ctx.db.write() as tx:
        token = await _issue_user_token(ctx, tx, user_id, now, amr)
        await audit.record(
            ctx, tx, "login_succeeded", actor=user_id, user_id=user_id, address=address, now=now, jti=token.jti, **extra
        )
        return token


LOCKED = "This account is locked. Ask the people who run this service to unlock it."


async def refuse_locked(ctx: Context, user, address: str | None) -> None:  # type: ignore[no-untyped-def]
    """The one rule of a locked account (``grantd.core.admin.lock``), for every way of signing in:
    once the user has proven who they are, a locked account is refused (InvalidGrant), audited."""
    if user.locked_at is None:
        return
    await audit.record_alone(ctx, "login_failed", actor=user.id, user_id=user.id, address=address, reason="locked")
    raise InvalidGrant(LOCKED)


async def _issue_user_token(  # type: ignore[no-untyped-def]
    ctx: Context, tx, user_id: str, now: int, amr: tuple[str, ...] = PASSWORD_AMR
) -> UserToken:
    jti = new_uuid()
    expires_at = now + ctx.settings.user_token_ttl
    stored = stored_amr(amr)
    await store.insert_session(tx, jti=jti, user_id=user_id, issued_at=now, expires_at=expires_at, amr=stored)
    claims = {
        "iss": ctx.settings.issuer,
        "sub": user_id,
        "user_id": user_id,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": expires_at,
    }
    if stored is not None:
        claims["amr"] = list(amr)
    return UserToken(user_id, ctx.signing.sign(claims, USER_TOKEN_TYPE), expires_at, jti)


async def authenticate(ctx: Context, token: str) -> Principal:
    """The signed-in user behind a user token; InvalidToken for anything else, app tokens included."""
    try:
        claims = ctx.signing.verify(token, typ=USER_TOKEN_TYPE, issuer=ctx.settings.issuer)
    except InvalidSignature:
        raise InvalidToken("The bearer token is malformed, expired, or not a user token.") from None
    jti, user_id = claims.get("jti"), claims.get("sub")
    if not isinstance(jti, str) or not isinstance(user_id, str):
        raise InvalidToken("The bearer token is not a user token.")
    async with ctx.db.read() as conn:
        session = await store.live_session(conn, jti, ctx.now())
    if session is None or session.user_id != user_id:
        raise InvalidToken("The bearer token has been revoked or has expired.")
    issued_at = claims.get("iat")
    amr = claims.get("amr")
    return Principal(
        user_id=user_id,
        jti=jti,
        issued_at=issued_at if isinstance(issued_at, int) else 0,
        amr=tuple(amr) if isinstance(amr, list) else PASSWORD_AMR,
    )


async def verify_current_password(ctx: Context, user: Principal, password: str, *, address: str | None = None) -> None:
    """The signed-in user's current password, checked like a log-in (InvalidGrant, RateLimited)."""
    row = await _account(ctx, user)
    await _check_current_password(ctx, user, row, password, address)


async def log_out(ctx: Context, principal: Principal) -> None:
    """End the session, and with it the OpenID grants bound to it (those without offline_access)."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.revoke_session(tx, principal.jti, now)
        await token_store.revoke_session_families(tx, principal.user_id, now, now + ctx.settings.access_token_ttl, session_jti=principal.jti)


async def replace_session(ctx: Context, old: Principal, new: UserToken) -> None:
    """A browser with a live session has signed in (or up) again, as ``new`` (``prompt=login``,
    ``max_age``, another account): the old session ends, and the OpenID grants bound to it (those
    without offline_access) are not left behind, bound to a session no one can end any more. They
    now end with the new session when it is the same person's, and at once otherwise."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.revoke_session(tx, old.jti, now)
        if old.user_id == new.user_id:
            await token_store.rebind_session(tx, old.user_id, old.jti, new.jti)
        else:
            await token_store.revoke_session_families(tx, old.user_id, now, now + ctx.settings.access_token_ttl, session_jti=old.jti)


async def email_of(ctx: Context, user: Principal) -> str:
    async with ctx.db.read() as conn:
        row = await store.by_id(conn, user.user_id)
    if row is None:  # the account was deleted while the session lived
        raise InvalidToken("The account no longer exists.")
    return row.email


async def change_password(
    ctx: Context, user: Principal, current_password: str, new_password: str, *, address: str | None = None
) -> int:
    """Replace the user's password and end every other session of theirs; the session ``user``
    signed in with stays. Returns how many other sessions were ended.

    The current password is checked like a log-in (the same rate limits, counted before argon2,
    given back on success): a stolen session cookie is not a way to guess it.
    InvalidGrant when it is wrong; InvalidRequest(field="password") when the new one breaks the rule.
    """
    row = await _account(ctx, user)
    await _check_current_password(ctx, user, row, current_password, address)
    if new_password == current_password:
        check_password_strength(new_password, row.email, ctx.settings.password_min_length)
        raise InvalidRequest("password is unchanged: choose a new one.", field="password")
    return await _replace_password(ctx, user, row.email, new_password, address)


async def change_password_signed_in_now(
    ctx: Context, user: Principal, new_password: str, *, address: str | None = None
) -> int:
    """Neucron v2's ``PUT /auth/user/password``: the same change as ``change_password`` (the same
    rule for the new password, every other session ended), without the current password. That is
    only as safe as the session is fresh: a token signed in for within ``FRESH_SIGN_IN`` seconds
    stands for a password just typed; an older one (a token left on a device, a stolen one) does
    not, and gets InsufficientUserAuthentication, which tells the client to sign the user in again."""
    _require_fresh_sign_in(ctx, user, "changing the password")
    row = await _account(ctx, user)
    return await _replace_password(ctx, user, row.email, new_password, address)


async def _account(ctx: Context, user: Principal):  # type: ignore[no-untyped-def]
    async with ctx.db.read() as conn:
        row = await store.by_id(conn, user.user_id)
    if row is None:
        raise InvalidToken("The account no longer exists.")
    return row


async def _check_current_password(ctx: Context, user: Principal, row, password: str, address: str | None) -> None:  # type: ignore[no-untyped-def]
    """The current password, checked like a log-in (the same rate limits, counted before argon2,
    given back on success): a stolen session cookie is not a way to guess it. InvalidGrant."""
    attempt = await ctx.limiter.hit(*ratelimit.login_limits(ctx.settings, row.email, address))
    if not await verify_password(row.password_hash, password[:PASSWORD_MAX_LENGTH]):
        await audit.record_alone(
            ctx, "login_failed", actor=user.user_id, user_id=user.user_id, address=address, reason="wrong_password"
        )
        raise InvalidGrant("The current password is wrong.")
    await ctx.limiter.refund(attempt)


def _require_fresh_sign_in(ctx: Context, user: Principal, doing: str) -> None:
    """A session signed in within ``FRESH_SIGN_IN`` seconds stands for a password just typed; an
    older one does not: InsufficientUserAuthentication, which tells the client to sign in again."""
    if ctx.now() - user.issued_at > FRESH_SIGN_IN:
        raise InsufficientUserAuthentication(
            f"Sign in again: {doing} without the current password needs a session signed in "
            f"within the last {FRESH_SIGN_IN // 60} minutes.",
            max_age=FRESH_SIGN_IN,
        )


async def confirm_identity(
    ctx: Context, user: Principal, *, password: str | None, doing: str, address: str | None = None
) -> None:
    """The signed-in user proves it is them before a sensitive change (``doing`` names it): with
    the current password (checked as a log-in: InvalidGrant, RateLimited) or, without one, by a
    session signed in within ``FRESH_SIGN_IN`` seconds (else InsufficientUserAuthentication)."""
    if password:
        await _check_current_password(ctx, user, await _account(ctx, user), password, address)
    else:
        _require_fresh_sign_in(ctx, user, doing)


async def request_email_change(
    ctx: Context, user: Principal, new_email: str, *, current_password: str | None = None, address: str | None = None
) -> bool:
    """Ask to make ``new_email`` the account's address: a link goes to it, and the address changes
    when its owner opens it (``email_address.request_change``, ``email_address.confirm``). False
    when it is the account's address already (nothing is done).

    The user proves who they are as for a password change: with the current password (the
    account page; InvalidGrant when wrong) or, without it, from a session signed in within
    ``FRESH_SIGN_IN`` seconds (Neucron v2's ``PUT /auth/user/update``; else
    InsufficientUserAuthentication). InvalidRequest(field="email"), RateLimited."""
    new_email = normalize_email(new_email)
    row = await _account(ctx, user)
    if new_email == row.email:
        return False
    if current_password is None:
        _require_fresh_sign_in(ctx, user, "changing the email address")
    else:
        await _check_current_password(ctx, user, row, current_password, address)
    await email_address.request_change(ctx, user.user_id, new_email, address=address)
    return True


async def _replace_password(ctx: Context, user: Principal, email: str, new_password: str, address: str | None) -> int:
    """The one rule of a password change, however the user proved who they are: the password
    rule, then in one transaction the new hash, every other session of the user ended (the one
    ``user`` signed in with stays) and ``password_changed`` audited. How many sessions ended."""
    check_password_strength(new_password, email, ctx.settings.password_min_length)
    password_hash = await hash_password(new_password)
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.set_password_hash(tx, user.user_id, password_hash)
        ended = await store.revoke_other_sessions(tx, user.user_id, user.jti, now)
        await token_store.revoke_session_families(tx, user.user_id, now, now + ctx.settings.access_token_ttl, keep_jti=user.jti)
        await audit.record(ctx, tx, "password_changed", actor=user.user_id, user_id=user.user_id, address=address, now=now)
        await notices.password_changed(ctx, tx, user.user_id, now)
    return ended


async def user_id_by_email(ctx: Context, email: str) -> str | None:
    async with ctx.db.read() as conn:
        user = await store.by_email(conn, normalize_email(email))
    return user.id if user else None


# ---------------------------------------------------------------- forgotten password


def reset_limits(ctx: Context, email: str, address: str | None) -> list[ratelimit.Limit]:
    settings = ctx.settings
    window = settings.rate_limit_password_reset_window
    limits = [ratelimit.Limit(f"reset:account:{email}", settings.rate_limit_password_reset_per_account, window)]
    if address:
        limits.append(ratelimit.Limit(f"reset:address:{address}", settings.rate_limit_password_reset_per_address, window))
    return limits


async def request_password_reset(
    ctx: Context, email: str, *, address: str | None = None, actor: str = audit.ANONYMOUS
) -> None:
    """Mail a single-use link to reset the password of the account of ``email``, if there is one.

    The caller answers ``RESET_REQUESTED`` either way, and the work is the same either way (a
    token made and hashed, the message rendered, one write transaction), so that neither the
    answer nor its time tells whether the address has an account. Rate limited per address and
    per email (RateLimited). ``actor``: an admin or the operator who sent it for the user. The token is stored only as its keyed hash; the message (sealed in
    the outbox, ``core.mail``) is the only place it is written."""
    email = normalize_email(email)
    await ctx.limiter.hit(*reset_limits(ctx, email, address))
    link = mail.new_link(ctx, "/password/reset")
    bodies = mail.render("password_reset", issuer=ctx.settings.issuer, link=link.url)
    now = ctx.now()
    async with ctx.db.read() as conn:
        user = await store.by_email(conn, email)
    async with ctx.db.write() as tx:
        if user is None:
            return
        await mail.queue_link(
            ctx, tx, link, user_id=user.id, purpose=RESET_PURPOSE, to=user.email, subject="Reset your password",
            bodies=bodies, ttl=RESET_TOKEN_TTL, now=now, email=user.email,
        )
        await audit.record(ctx, tx, "password_reset_requested", actor=actor, user_id=user.id, address=address, now=now)


async def reset_token_is_live(ctx: Context, token: str) -> bool:
    async with ctx.db.read() as conn:
        return await mail_store.live_token(conn, mail.token_hash(ctx, token), RESET_PURPOSE, ctx.now()) is not None


async def reset_password(ctx: Context, token: str, new_password: str, *, address: str | None = None) -> int:
    """Set a new password with a reset link's token, spending it, and end every session of the
    user. InvalidGrant when the token is unknown, used or expired; InvalidRequest(field="password")
    when the new password breaks the rule (the token is then not spent). How many sessions ended."""
    invalid = InvalidGrant("This password-reset link is not valid: it was used already, or it expired.")
    token_hash = mail.token_hash(ctx, token)
    async with ctx.db.read() as conn:
        found = await mail_store.live_token(conn, token_hash, RESET_PURPOSE, ctx.now())
        user = await store.by_id(conn, found.user_id) if found is not None else None
    if found is None or user is None:
        raise invalid
    check_password_strength(new_password, user.email, ctx.settings.password_min_length)
    password_hash = await hash_password(new_password)
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await mail_store.spend_token(tx, token_hash, RESET_PURPOSE, now):
            raise invalid
        await store.set_password_hash(tx, user.id, password_hash)
        if found.email is not None:  # the link reached the address: it is proven too
            await store.mark_email_verified(tx, user.id, found.email, now)
        ended = await store.revoke_other_sessions(tx, user.id, "", now)  # no session is kept
        await token_store.revoke_session_families(tx, user.id, now, now + ctx.settings.access_token_ttl)
        await audit.record(ctx, tx, "password_reset", actor=user.id, user_id=user.id, address=address, now=now)
        await notices.password_changed(ctx, tx, user.id, now, by_reset=True)
    return ended
