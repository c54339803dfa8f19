"""The device authorization grant (RFC 8628): a device without a browser (a TV, a printer, a
command-line tool) asks for access, a person approves it on another device, and the device polls
the token endpoint until they have.

1. ``authorize_device`` (``POST /oauth2/device_authorization``, §3.1–§3.2): the client
   authenticates as at the token endpoint (a public client by its ``client_id``), its ``scope`` is
   checked as the authorization endpoint checks it, and it gets a ``device_code`` (256 random
   bits), a ``user_code`` for the person to type (§6.1: 8 letters of ``ALPHABET``, no vowels and no
   look-alikes, shown ``WDJB-MJHT``), the ``verification_uri`` (``{issuer}/device``) and its
   ``_complete`` form with the user code, ``expires_in`` (``GRANTD_DEVICE_CODE_TTL``) and
   ``interval`` (``GRANTD_DEVICE_CODE_INTERVAL``). Only keyed hashes of both codes are stored.
2. ``find`` (the ``/device`` page, §3.3): the request a typed user code names, matched ignoring
   case, dashes and spaces; every lookup is counted per address and globally before it is made,
   and a right code gives its attempt back (§5.1: the user code is short, guessing must be slow).
3. ``decide``: the signed-in person approves (consent is recorded as on the consent page) or
   denies; once, whatever the number of tabs.
4. ``poll`` (the token endpoint, §3.4–§3.5): ``authorization_pending`` until the decision,
   ``slow_down`` to a device polling sooner than its interval (which then grows by 5 seconds),
   ``access_denied``, ``expired_token``; an approved code is redeemed exactly once for tokens as
   the code grant issues them (a refresh token, an ID token for ``openid``). ``resource`` (RFC
   8707) there is the access token's audience, as at a code's token request (``core.resources``:
   the value, the policy, the permissions a registered resource accepts); the device authorization
   request names none, so the resource the device's token request names becomes its grant's: the
   refresh token keeps it, and its refreshes may name it or leave it out, never name another.

A device's grant does not end with the browser session that approved it: that session is on
another device, and signing out there is not the device's sign-out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from grantd.core.amr import stored_amr
from grantd.core import access_token, audit, authorization, dpop, id_tokens, openid, ratelimit, resources
from grantd.core import permissions as perms
from grantd.core.access_token import IssuedToken
from grantd.core.accounts import Principal
from grantd.core.client_auth import ClientAuthentication
from grantd.core.context import Context
from grantd.core.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    SlowDown,
)
from grantd.core.grants.refresh_token import refresh_row
from grantd.crypto.secrets import new_secret, new_token_id
from grantd.store import apps as app_store
from grantd.store import device_codes as store
from grantd.store import grants as grant_store
from grantd.store import users as user_store

# RFC 8628 §6.1: consonants only (no vowels, so no words), without the look-alikes of digits; 20
# letters, 8 of them: 20^8 ≈ 2.6 × 10^10 codes (34.5 bits), for guesses rate-limited per window.
ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5  # §3.5: seconds added to the interval on each slow_down
VERIFICATION_PATH = "/device"
_BAD_DEVICE_CODE = "The device code is unknown, already used, or belongs to another app."
_DRAWS = 8  # user codes drawn before giving up on a free one (each is taken with odds ~ live codes / 2.6e10)


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """The device authorization response (§3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True)
class Pending:
    """A request waiting for a person's decision, as the pages show it."""

    device_code_hash: str
    app_id: str
    app_name: str
    owner_email: str
    permissions: tuple[str, ...]
    expires_at: int
    user_code: str  # as shown: WDJB-MJHT


class UnknownUserCode(InvalidRequest):
    """A typed user code that names no request waiting for a decision: wrong, expired, or decided."""


# ---------------------------------------------------------------- user codes


def new_user_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LENGTH))


def shown(user_code: str) -> str:
    """The user code as people read it: two groups of four, ``WDJB-MJHT``."""
    half = USER_CODE_LENGTH // 2
    return f"{user_code[:half]}-{user_code[half:]}"


def normalized(typed: str) -> str | None:
    """A typed user code as issued (``wdjb mjht``, ``WDJB-MJHT``: ``WDJBMJHT``), or None when it
    cannot be one: the wrong length, or a letter the codes never use."""
    if len(typed) > 64:
        return None
    code = "".join(ch for ch in typed if ch not in "- \t").upper()
    if len(code) != USER_CODE_LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    return code


def _user_code_hash(ctx: Context, code: str) -> str:
    return ctx.hasher.hash("device user code " + code)


def verification_uri(ctx: Context) -> str:
    return ctx.settings.issuer + VERIFICATION_PATH


# ---------------------------------------------------------------- §3.1–§3.2: the device asks


async def authorize_device(ctx: Context, auth: ClientAuthentication, form: dict[str, str]) -> DeviceAuthorization:
    """``POST /oauth2/device_authorization``: authenticate the client, check the scope, issue the
    codes. Errors are the token endpoint's (RFC 6749 §5.2)."""
    client = await auth.authenticate(ctx)
    async with ctx.db.read() as conn:
        app = await app_store.live(conn, client.app_id)
    if app is None:
        raise InvalidClient("Unknown client_id, or the app is disabled.")
    scope = form.get("scope")
    if scope is not None and "\x00" in scope:
        raise InvalidRequest("scope must not contain the NUL character (%00).")
    requested = authorization.requested_scope(ctx, perms.parse(app.permissions), scope)
    device_code = new_secret()
    now = ctx.now()
    ttl = ctx.settings.device_code_ttl
    interval = ctx.settings.device_code_interval
    for _ in range(_DRAWS):
        user_code = new_user_code()
        async with ctx.db.write() as tx:
            inserted = await store.insert_request(
                tx,
                device_code_hash=ctx.hasher.hash(device_code),
                user_code_hash=_user_code_hash(ctx, user_code),
                app_id=client.app_id,
                scope=" ".join(requested),
                created_at=now,
                expires_at=now + ttl,
                interval=interval,
            )
        if inserted:
            break
    else:  # eight codes in a row taken: the table is full of live codes, or something is broken
        raise RuntimeError("no free user code")
    uri = verification_uri(ctx)
    code = shown(user_code)
    return DeviceAuthorization(device_code, code, uri, f"{uri}?user_code={code}", ttl, interval)


# ---------------------------------------------------------------- §3.3: the person approves or denies


def _guess_limits(ctx: Context, address: str | None) -> list[ratelimit.Limit]:
    settings = ctx.settings
    window = settings.rate_limit_user_code_window
    limits = [ratelimit.Limit("user_code:all", settings.rate_limit_user_code_global, window)]
    if address:
        limits.append(ratelimit.Limit(f"user_code:address:{address}", settings.rate_limit_user_code_per_address, window))
    return limits


async def find(ctx: Context, typed: str, address: str | None) -> Pending:
    """The request the typed user code names, waiting for a decision and unexpired.

    UnknownUserCode when there is none (or the text cannot be a code); RateLimited when this
    address, or everyone together, typed too many wrong codes lately. A well-formed code is counted
    before it is looked up (so that concurrent guesses cannot slip past the limit), and a right one
    gives its attempt back."""
    code = normalized(typed)
    if code is None:
        raise UnknownUserCode(f"Enter the {USER_CODE_LENGTH}-letter code your device shows.", field="user_code")
    hits = await ctx.limiter.hit(*_guess_limits(ctx, address))
    now = ctx.now()
    async with ctx.db.read() as conn:
        row = await store.pending_by_user_code(conn, _user_code_hash(ctx, code), now)
        app = await app_store.live(conn, row.app_id) if row is not None else None
        owner = await user_store.by_id(conn, app.owner_id) if app is not None else None
    if row is None or app is None or owner is None:
        raise UnknownUserCode(
            "That code is not right, or it has expired. Check the code on your device and try again.", field="user_code"
        )
    await ctx.limiter.refund(hits)
    return Pending(
        row.device_code_hash, app.id, app.name, owner.email, tuple(row.scope.split(" ")), row.expires_at, shown(code)
    )


async def decide(ctx: Context, principal: Principal, pending: Pending, *, approve: bool, address: str | None = None) -> bool:
    """Record the signed-in person's decision; approving records their consent to the app for the
    scope, as the consent page does. Whether it was taken: False when the request was decided
    meanwhile (another tab) or expired."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        decided = await store.decide(
            tx, pending.device_code_hash, approved=approve, user_id=principal.user_id,
            auth_time=principal.issued_at or None, now=now, amr=stored_amr(principal.amr),
        )
        if decided:
            if approve:
                await authorization.record_consent(ctx, tx, principal.user_id, pending.app_id, pending.permissions, now, address)
            await audit.record(
                ctx, tx, "device_approved" if approve else "device_denied", actor=principal.user_id,
                user_id=principal.user_id, app_id=pending.app_id, address=address, now=now,
                permissions=list(pending.permissions),
            )
    return decided


# ---------------------------------------------------------------- §3.4–§3.5: the device polls

_ISSUED, _PENDING, _SLOW_DOWN, _DENIED, _EXPIRED, _BAD = range(6)


async def poll(
    ctx: Context, auth: ClientAuthentication, device_code: str, address: str | None, resource: str | None = None
) -> IssuedToken:
    """The token endpoint's answer to a device polling with its ``device_code``.

    The client is proven first, then ``resource`` (RFC 8707) if sent: one valid URI, under the
    ``registered`` policy a registered resource (its registration read before the code is).
    Then, in one write transaction holding the request's row: an
    unknown code, another app's or a redeemed one is ``invalid_grant``; an expired one
    ``expired_token``; a denied one ``access_denied``; a pending one ``authorization_pending``, or
    ``slow_down`` when polled sooner than its interval after the last poll (the interval then
    grows by ``SLOW_DOWN_STEP``); an approved one is spent (``store.redeem``: exactly once, even
    under concurrent polls) with the tokens it issues and the ``device_code_redeemed`` audit row,
    unless the resource accepts none of the permissions granted (``invalid_target``, the code
    unspent)."""
    client = await auth.authenticate(ctx)
    audience, accepted = None, None
    if resource is not None:
        audience = resources.one(resource)
        accepted = await resources.accepted_by(ctx, audience)
    code_hash = ctx.hasher.hash(device_code)
    now, jti, refresh_token = ctx.now(), new_token_id(), new_secret()
    outcome, row = _BAD, None
    permissions: tuple[str, ...] = ()  # the access token's: the grant, narrowed to the resource
    async with ctx.db.write() as tx:
        row = await store.for_poll(tx, code_hash)
        if row is None or row.app_id != client.app_id or row.redeemed_at is not None:
            outcome = _BAD
        elif row.expires_at <= now:
            outcome = _EXPIRED
        elif row.status == store.DENIED:
            outcome = _DENIED
        elif row.status == store.PENDING:
            too_soon = row.last_polled_at is not None and now - row.last_polled_at < row.interval
            await store.polled(tx, code_hash, now, row.interval + SLOW_DOWN_STEP if too_soon else row.interval)
            outcome = _SLOW_DOWN if too_soon else _PENDING
        elif await grant_store.of(tx, row.user_id, row.app_id) is None:
            outcome = _DENIED  # approved, then the person withdrew the app's access before the device came back
        else:
            granted = tuple(row.scope.split(" "))
            permissions = granted if audience is None else resources.narrowed(granted, accepted, audience)
            issue = _issue(ctx, client, row, jti, refresh_token, now, address, " ".join(permissions), audience)
            spent = await store.redeem(tx, code_hash, client.app_id, now, **issue)
            outcome = _ISSUED if spent else _BAD
    if outcome == _ISSUED:
        assert row is not None
        issued = access_token.issue(
            ctx, client, jti=jti, user_id=row.user_id, permissions=permissions, now=now, refresh_token=refresh_token,
            audience=audience, family=row.device_code_hash,
        )
        if openid.is_openid(row.scope.split(" ")):  # the grant's, whatever a resource narrowed the access token to
            issued = await id_tokens.with_id_token(
                ctx, issued, app_id=client.app_id, user_id=row.user_id, auth_time=row.auth_time, nonce=None, now=now,
                amr=row.amr,
            )
        return issued
    if outcome == _PENDING:
        raise AuthorizationPending("The person has not approved or denied the request yet: poll again after the interval.")
    if outcome == _SLOW_DOWN:
        assert row is not None
        raise SlowDown(f"Polling too fast: wait at least {row.interval + SLOW_DOWN_STEP} seconds between requests.")
    if outcome == _DENIED:
        raise AccessDenied("The person denied the request.")
    if outcome == _EXPIRED:
        raise ExpiredToken("The device code has expired: start again with a new device authorization request.")
    raise InvalidGrant(_BAD_DEVICE_CODE)


def _issue(
    ctx: Context, client: Any, row: Any, jti: str, refresh_token: str, now: int, address: str | None, scope: str,
    audience: str | None,
) -> dict[str, Any]:
    """The rows an approved request writes: the refresh token (its family, and the access token's,
    is the device code, as a code's tokens are the code's; a public client's bound to its DPoP
    proof's key, as the code grant's; the resource the access token is for, ``audience``, its
    grant's) and the audit row. ``scope``: the access token's."""
    # The access token's particulars (it has no row): built first, so an app that requires DPoP gets nothing without a proof.
    access_token.row(
        ctx, client, jti=jti, user_id=row.user_id, code_hash=row.device_code_hash, scope=scope, now=now, audience=audience
    )
    # The refresh token keeps the whole grant, whatever this access token was narrowed to.
    refresh = refresh_row(
        ctx, client, refresh_token, code_hash=row.device_code_hash, user_id=row.user_id, scope=row.scope,
        access_jti=jti, now=now, auth_time=row.auth_time, session_jti=None, amr=row.amr,
        dpop_jkt=dpop.refresh_binding(client), resources=resources.stored(() if audience is None else (audience,)),
    )
    event = audit.entry(
        ctx, "device_code_redeemed", actor=client.app_id, user_id=row.user_id, app_id=client.app_id,
        address=address, now=now, jti=jti, key_id=client.key_id,
    )
    return {"refresh": refresh, "audit": event}
