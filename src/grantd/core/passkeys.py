"""Passkeys: WebAuthn credentials to sign in with, instead of a password or after it.

The ceremonies' checks (client data, origin, RP ID hash, flags, COSE keys, signatures, the
signature counter) are py_webauthn's; grantd decides the rest:

- The Relying Party ID is the issuer's host, and the only origin accepted is the issuer's
  (``scheme://host[:port]``). WebAuthn needs a secure context: an https issuer, or
  ``http://localhost`` while developing (an IP address cannot be an RP ID).
- Every ceremony starts with a new random challenge, stored only as its keyed hash, bound to
  what started it (registration: the signed-in user; sign-in: the browser's pre-session cookie),
  alive ``CHALLENGE_TTL`` seconds and spent by the first answer that names it, right or wrong.
- Registration asks for a discoverable credential ("resident key") with user verification, so
  that a passkey alone signs a person in: user verification is required at every sign-in.
- A sign-in names its credential; the account is the credential's owner. A signature counter
  that does not grow (for an authenticator that keeps one) refuses the sign-in: the credential
  may have been cloned.
- A passkey is also a second factor (``second_factor.PASSKEY``): where the second step follows
  the password (``second_factor.asked_after_password``: beside an authenticator app, or where
  the operator requires a second factor), it may ask for one of that account's passkeys
  (``second_step_options``, ``second_step``). Its challenge is made for that step (a purpose of
  its own) and bound to the pending sign-in (``second_factor.Pending``), so it serves neither a
  passkey sign-in nor another pending sign-in; a passkey of another account is refused.
- Every ceremony's answer counts against the per-address sign-in limit
  (``GRANTD_RATE_LIMIT_LOGIN_PER_ADDRESS`` per ``GRANTD_RATE_LIMIT_LOGIN_WINDOW``), given back on
  success, as for a password; at the second step, against the limits of second-factor codes
  (``second_factor.limits``: the account's and the address's).
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
import secrets
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from grantd.core import accounts, audit, notices, ratelimit, second_factor
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant, InvalidRequest, NotFound
from grantd.store import passkeys as store, users as user_store

if TYPE_CHECKING:
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor

CHALLENGE_TTL = 300  # seconds a ceremony may take, from its options to its answer
# RFC 8176 §2 of a passkey sign-in: a hardware-bound key, the person present and verified (user
# verification is required), which is more than one factor: it needs no second factor after it.
AMR = ("hwk", "user", "mfa")
# What a passkey proves after a password: second_factor.amr_of adds the password and "mfa".
PROVES = tuple(method for method in AMR if method != second_factor.MFA)
NAME_MAX = 64
CREDENTIAL_MAX = 16_384  # characters of a posted credential (JSON): no real one comes near
REGISTER, SIGN_IN, SECOND_STEP = "register", "sign_in", "second_factor"
_TIMEOUT_MS = CHALLENGE_TTL * 1000
_REFUSED = "This passkey cannot be used to sign in here."
# A credential id as grantd keeps it: base64url of at most 1023 bytes (WebAuthn §5.1, credential ID).
_CREDENTIAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,1364}$")


@dataclass(frozen=True, slots=True)
class Passkey:
    credential_id: str
    name: str
    created_at: int
    last_used_at: int | None


def relying_party(ctx: Context) -> tuple[str, str]:
    """(RP ID, origin): the issuer's host, and the issuer's origin."""
    parts = urlsplit(ctx.settings.issuer)
    host = (parts.hostname or "").lower()
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port is not None else "")
    return host, origin


def available(ctx: Context) -> bool:
    """Whether browsers can use passkeys with this issuer: its host a domain name (an IP address
    cannot be an RP ID), in a secure context (https, or http at ``localhost``)."""
    scheme = urlsplit(ctx.settings.issuer).scheme
    host, _ = relying_party(ctx)
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    local = host == "localhost" or host.endswith(".localhost")
    return bool(host) and (scheme == "https" or (scheme == "http" and local))


def _challenge_hash(ctx: Context, challenge: str) -> str:
    return ctx.hasher.hash("passkey challenge " + challenge)


def _binding(ctx: Context, value: str) -> str:
    return ctx.hasher.hash("passkey binding " + value)


async def _new_challenge(ctx: Context, purpose: str, binding: str) -> bytes:
    challenge = secrets.token_bytes(32)
    now = ctx.now()
    async with ctx.db.write() as tx:
        await store.insert_challenge(
            tx,
            challenge_hash=_challenge_hash(ctx, _webauthn().bytes_to_base64url(challenge)),
            purpose=purpose,
            binding=_binding(ctx, binding),
            expires_at=now + CHALLENGE_TTL,
            now=now,
        )
    return challenge


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _parse(credential: str) -> tuple[dict[str, Any], str]:
    """The posted credential (PublicKeyCredential as JSON) and the challenge its client data
    names; InvalidRequest for anything that is not one."""
    if len(credential) > CREDENTIAL_MAX:
        raise InvalidRequest("The passkey's answer is too large.", field="credential")
    try:
        parsed = json.loads(credential)
        client_data = json.loads(_b64url(parsed["response"]["clientDataJSON"]))
        challenge = client_data["challenge"]
        if not isinstance(parsed["id"], str) or not isinstance(challenge, str) or not challenge:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("The passkey's answer is not a WebAuthn credential.", field="credential") from None
    return parsed, challenge


async def _spend(ctx: Context, challenge: str, purpose: str, binding: str) -> bytes:
    async with ctx.db.write() as tx:
        live = await store.spend_challenge(tx, _challenge_hash(ctx, challenge), purpose, _binding(ctx, binding), ctx.now())
    if not live:
        raise InvalidGrant("This passkey request has expired or was used already. Try again.")
    try:
        return _b64url(challenge)
    except (ValueError, binascii.Error):
        raise InvalidGrant("This passkey request has expired or was used already. Try again.") from None


def _limits(ctx: Context, address: str | None, user_id: str | None = None) -> list[ratelimit.Limit]:
    if user_id is not None:  # the second step: a passkey counts as a guess of a code does
        return second_factor.limits(ctx, user_id, address)
    if not address:
        return []
    settings = ctx.settings
    return [ratelimit.Limit(f"passkey:address:{address}", settings.rate_limit_login_per_address, settings.rate_limit_login_window)]


@functools.cache
def _webauthn() -> SimpleNamespace:
    """py_webauthn, imported at the first passkey ceremony. Imported with grantd it cost every server
    process ~5 MB and ~0.1 s of its start (with what it imports: pyOpenSSL, pyasn1, cbor2)."""
    import webauthn
    from webauthn.helpers import bytes_to_base64url, options_to_json
    from webauthn.helpers.exceptions import WebAuthnException
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        AuthenticatorTransport,
        PublicKeyCredentialDescriptor,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    return SimpleNamespace(
        generate_registration_options=webauthn.generate_registration_options,
        verify_registration_response=webauthn.verify_registration_response,
        generate_authentication_options=webauthn.generate_authentication_options,
        verify_authentication_response=webauthn.verify_authentication_response,
        bytes_to_base64url=bytes_to_base64url,
        options_to_json=options_to_json,
        WebAuthnException=WebAuthnException,
        AuthenticatorSelectionCriteria=AuthenticatorSelectionCriteria,
        AuthenticatorTransport=AuthenticatorTransport,
        PublicKeyCredentialDescriptor=PublicKeyCredentialDescriptor,
        ResidentKeyRequirement=ResidentKeyRequirement,
        UserVerificationRequirement=UserVerificationRequirement,
        TRANSPORTS={t.value for t in AuthenticatorTransport},
    )


# ---------------------------------------------------------------- registration


async def registration_options(ctx: Context, user: accounts.Principal) -> str:
    """The options of ``navigator.credentials.create`` (JSON) for a new passkey of ``user``."""
    email = await accounts.email_of(ctx, user)
    async with ctx.db.read() as conn:
        existing = await store.of_user(conn, user.user_id)
    rp_id, _ = relying_party(ctx)
    w = _webauthn()
    options = w.generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_id,
        user_id=user.user_id.encode(),
        user_name=email,
        user_display_name=email,
        challenge=await _new_challenge(ctx, REGISTER, user.user_id),
        timeout=_TIMEOUT_MS,
        authenticator_selection=w.AuthenticatorSelectionCriteria(
            resident_key=w.ResidentKeyRequirement.REQUIRED,
            user_verification=w.UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[w.PublicKeyCredentialDescriptor(id=_b64url(row.credential_id)) for row in existing],
    )
    return w.options_to_json(options)


def clean_name(name: str) -> str:
    """A passkey's name as kept: trimmed; InvalidRequest(field="name") when empty or too long."""
    name = " ".join(name.split())
    if not name:
        raise InvalidRequest("Give the passkey a name.", field="name")
    if len(name) > NAME_MAX:
        raise InvalidRequest(f"Use at most {NAME_MAX} characters for the name.", field="name")
    return name


async def register(
    ctx: Context, user: accounts.Principal, credential: str, name: str, *, address: str | None = None
) -> Passkey:
    """Keep the passkey ``credential`` (the browser's answer to ``registration_options``) as
    ``name``. InvalidRequest (a malformed answer, a bad name), InvalidGrant (an expired or spent
    challenge, a failed check: another origin, no user verification), RateLimited."""
    name = clean_name(name)
    parsed, challenge = _parse(credential)
    attempt = await ctx.limiter.hit(*_limits(ctx, address))
    expected = await _spend(ctx, challenge, REGISTER, user.user_id)
    rp_id, origin = relying_party(ctx)
    w = _webauthn()
    try:
        verified = w.verify_registration_response(
            credential=parsed,
            expected_challenge=expected,
            expected_rp_id=rp_id,
            expected_origin=origin,
            require_user_verification=True,
        )
    except (w.WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise InvalidGrant(f"The passkey was not accepted: {exc}") from None
    transports = parsed.get("response", {}).get("transports") or []
    kept = ",".join(t for t in transports if isinstance(t, str) and t in w.TRANSPORTS) if isinstance(transports, list) else ""
    credential_id = w.bytes_to_base64url(verified.credential_id)
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.insert_passkey(
            tx, credential_id=credential_id, user_id=user.user_id, public_key=w.bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count, transports=kept, name=name, now=now,
        ):
            raise InvalidGrant("This passkey is registered already.")
        await audit.record(ctx, tx, "passkey_added", actor=user.user_id, user_id=user.user_id, address=address, now=now)
        await notices.factor_added(ctx, tx, user.user_id, "passkey")
    await ctx.limiter.refund(attempt)
    return Passkey(credential_id, name, now, None)


# ---------------------------------------------------------------- the user's passkeys


async def list_passkeys(ctx: Context, user_id: str) -> list[Passkey]:
    async with ctx.db.read() as conn:
        rows = await store.of_user(conn, user_id)
    return [Passkey(row.credential_id, row.name, row.created_at, row.last_used_at) for row in rows]


async def rename(ctx: Context, user: accounts.Principal, credential_id: str, name: str) -> None:
    name = clean_name(name)
    if not _CREDENTIAL_ID.match(credential_id):  # no passkey is named so; never look it up
        raise NotFound("You have no such passkey.")
    async with ctx.db.write() as tx:
        if not await store.rename(tx, user.user_id, credential_id, name):
            raise NotFound("You have no such passkey.")


async def remove(
    ctx: Context, user: accounts.Principal, credential_id: str, *, password: str | None, address: str | None = None
) -> None:
    """Remove one of the user's passkeys, proven by the current password (InvalidGrant when wrong,
    rate limited as a sign-in) or, without it, by a session signed in within
    ``accounts.FRESH_SIGN_IN`` seconds (else InsufficientUserAuthentication). NotFound."""
    if not _CREDENTIAL_ID.match(credential_id):  # no passkey is named so; never look it up
        raise NotFound("You have no such passkey.")
    await accounts.confirm_identity(ctx, user, password=password, doing="removing a passkey", address=address)
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.remove(tx, user.user_id, credential_id):
            raise NotFound("You have no such passkey.")
        await audit.record(ctx, tx, "passkey_removed", actor=user.user_id, user_id=user.user_id, address=address, now=now)
        await notices.factor_removed(ctx, tx, user.user_id, "passkey")


# ---------------------------------------------------------------- signing in


async def sign_in_options(ctx: Context, binding: str, *, user_id: str | None = None) -> str:
    """The options of ``navigator.credentials.get`` (JSON). ``binding``: what the answer must come
    with (the browser's pre-session cookie; at the second step, the pending sign-in). Without
    ``user_id`` no credential is named (the browser offers the passkeys it has for this site:
    discoverable credentials, conditional UI); with it (the second factor after a password),
    that user's passkeys, and the challenge is for the second step only."""
    w = _webauthn()
    allowed: list[PublicKeyCredentialDescriptor] = []
    if user_id is not None:
        async with ctx.db.read() as conn:
            rows = await store.of_user(conn, user_id)
        allowed = [
            w.PublicKeyCredentialDescriptor(
                id=_b64url(row.credential_id),
                transports=[w.AuthenticatorTransport(t) for t in row.transports.split(",") if t],
            )
            for row in rows
        ]
    rp_id, _ = relying_party(ctx)
    options = w.generate_authentication_options(
        rp_id=rp_id,
        challenge=await _new_challenge(ctx, SIGN_IN if user_id is None else SECOND_STEP, binding),
        timeout=_TIMEOUT_MS,
        allow_credentials=allowed,
        user_verification=w.UserVerificationRequirement.REQUIRED,
    )
    return w.options_to_json(options)


async def sign_in(
    ctx: Context, credential: str, binding: str, *, user_id: str | None = None, address: str | None = None
) -> str:
    """The user a passkey's answer (to ``sign_in_options`` with the same ``binding``) proves; with
    ``user_id`` (a second factor after that user's password) it must be one of theirs.

    A passkey is something the person has, unlocked by something they know or are (user
    verification is required): it signs a person in alone, with no second factor after it.
    InvalidRequest (malformed), InvalidGrant (an expired or spent challenge, an unknown
    credential, another user's, a failed check, a counter that went back), RateLimited."""
    parsed, challenge = _parse(credential)
    attempt = await ctx.limiter.hit(*_limits(ctx, address, user_id))
    expected = await _spend(ctx, challenge, SIGN_IN if user_id is None else SECOND_STEP, binding)
    row = owner = None
    if _CREDENTIAL_ID.match(parsed["id"]):  # else no passkey is named so; never look it up
        async with ctx.db.read() as conn:
            row = await store.by_credential_id(conn, parsed["id"])
            owner = await user_store.by_id(conn, row.user_id) if row is not None else None
    if user_id is not None and row is not None and row.user_id != user_id:
        await _failed(ctx, user_id, address, "passkey_of_another_account")
        raise InvalidGrant(_REFUSED)
    if row is None or owner is None:
        await _failed(ctx, user_id if row is None else row.user_id, address, "unknown_passkey")
        raise InvalidGrant(_REFUSED)
    handle = parsed.get("response", {}).get("userHandle")
    if handle and (not isinstance(handle, str) or _safe_b64url(handle) != row.user_id.encode()):
        await _failed(ctx, row.user_id, address, "passkey_user_mismatch")
        raise InvalidGrant(_REFUSED)
    rp_id, origin = relying_party(ctx)
    w = _webauthn()
    try:
        verified = w.verify_authentication_response(
            credential=parsed,
            expected_challenge=expected,
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=_b64url(row.public_key),
            credential_current_sign_count=row.sign_count,
            require_user_verification=True,
        )
    except (w.WebAuthnException, ValueError, KeyError, TypeError):
        await _failed(ctx, row.user_id, address, "passkey_refused")
        raise InvalidGrant(_REFUSED) from None
    async with ctx.db.write() as tx:
        if not await store.record_use(
            tx, row.credential_id, seen_count=row.sign_count, new_count=verified.new_sign_count, now=ctx.now()
        ):
            raise InvalidGrant(_REFUSED)
    await ctx.limiter.refund(attempt)
    return row.user_id


def _safe_b64url(value: str) -> bytes | None:
    try:
        return _b64url(value)
    except (ValueError, binascii.Error):
        return None


async def _failed(ctx: Context, user_id: str | None, address: str | None, reason: str) -> None:
    await audit.record_alone(ctx, "login_failed", actor=audit.ANONYMOUS, user_id=user_id, address=address, reason=reason)


async def log_in(ctx: Context, credential: str, binding: str, *, address: str | None = None) -> accounts.UserToken:
    """Sign in with a passkey alone: ``sign_in``, then a session as a password sign-in makes."""
    user_id = await sign_in(ctx, credential, binding, address=address)
    async with ctx.db.read() as conn:
        user = await user_store.by_id(conn, user_id)
    if user is None:
        raise InvalidGrant(_REFUSED)
    await accounts.refuse_locked(ctx, user, address)  # a locked account signs in no way at all
    return await accounts.start_session(ctx, user_id, AMR, address=address, reason="passkey")


# ---------------------------------------------------------------- the second factor after a password


async def second_step_options(ctx: Context, pending: second_factor.Pending) -> str:
    """The options of ``navigator.credentials.get`` (JSON) at the second step of ``pending``:
    its user's passkeys, a challenge bound to this pending sign-in."""
    return await sign_in_options(ctx, pending.jti, user_id=pending.user_id)


async def second_step(
    ctx: Context, pending: second_factor.Pending, credential: str, *, address: str | None = None
) -> tuple[str, ...]:
    """A passkey as the second factor after the password: the answer to ``second_step_options``
    of the same pending sign-in, by one of its user's passkeys. The session's ``amr`` (the
    password, the passkey, "mfa"). InvalidRequest, InvalidGrant, RateLimited as ``sign_in``."""
    await sign_in(ctx, credential, pending.jti, user_id=pending.user_id, address=address)
    return second_factor.amr_of(PROVES)
