"""The authorization_code grant at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9700
§4.5): a code is redeemed at most once, and a code presented again revokes everything it issued —
unless it is the same request again, retried because its answer was lost.

Spending the code is atomic and writes the refresh token and the code_redeemed audit row with it
or not at all, and on the code the access token's jti and key (the access token has no row)
(``store.codes.spend``, on either database). A code found already redeemed, or spent by a
concurrent caller in between, is judged in a transaction of its own (``_replayed``):

- a **retry** (``_retried``): the same client (the same key, for a client with keys) repeating
  the request the code was redeemed by — the same code, passing the same checks (its PKCE
  verifier, its ``redirect_uri`` and ``state``), asking the same (a refresh token or none) —
  within ``code_retry_grace`` seconds of the redemption, while what it issued is untouched (the
  access token live, the refresh token unrotated): it gets the same tokens again (the access
  token re-signed with the same claims, the same refresh token, which is derived from the code,
  ``hasher.successor``), nothing is revoked, and ``code_retried`` is audited. A client whose
  connection failed as the redemption committed thus gets the answer it never received;
- anything else is a **replay**: the family is revoked and ``code_replayed`` audited.

Retries are taken at the Neucron token endpoints, and at ``/oauth2/token`` only with
``code_retry_at_oauth2_token``: there RFC 6749 §4.1.2 says a code used twice MUST be denied, and
OpenID certification checks it (oidcc-codereuse).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from grantd.core import access_token, audit, dpop, id_tokens, openid, pkce, resources
from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import Caller, ClientAuthentication, missing
from grantd.core.clients import Client
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant
from grantd.core.grants.refresh_token import refresh_row
from grantd.crypto.secrets import new_token_id
from grantd.store import codes as code_store
from grantd.store import tokens as token_store
from grantd.store.tokens import Issue

GRANT_TYPE = "authorization_code"
_BAD_CODE = "The authorization code is unknown, expired, already used, or belongs to another app."


def token_request(
    ctx: Context, auth: ClientAuthentication, params: Mapping[str, str], address: str | None
) -> Awaitable[IssuedToken]:
    """``grant_type=authorization_code`` (RFC 6749 §4.1.3), with a refresh token; ``resource``
    (RFC 8707) naming one of the code's resources."""
    code = params.get("code")
    if code is None:
        return missing(ctx, auth, "code")
    return redeem(
        ctx, auth, code, code_verifier=params.get("code_verifier"), redirect_uri=params.get("redirect_uri"),
        with_refresh_token=True, address=address, redirect_uri_as_authorized=True,
        retry=ctx.settings.code_retry_at_oauth2_token, resource=params.get(resources.PARAMETER),
    )


async def redeem(
    ctx: Context,
    auth: ClientAuthentication,
    auth_code: str,
    *,
    code_verifier: str | None = None,
    redirect_uri: str | None = None,
    state: str | None = None,
    with_refresh_token: bool = False,
    address: str | None = None,
    redirect_uri_as_authorized: bool = False,
    retry: bool = True,
    resource: str | None = None,
) -> IssuedToken:
    """Exchange a code for tokens, at most once, for the client ``auth`` proves (the Neucron token
    requests and the OAuth 2.0 grant alike). The client is proven before anything about the code is
    looked at; on PostgreSQL its key is read with the code, in one SELECT.

    ``redirect_uri`` and ``state``, when given, must be those the code was issued with (checked
    before the spend: a mismatch leaves the code unspent). With ``redirect_uri_as_authorized`` (the
    OAuth 2.0 token request, RFC 6749 §4.1.3), ``redirect_uri`` must be given when the authorization
    request named one. A code of the caller's already redeemed is judged as a retry (``_retried``)
    before it is a replay, unless ``retry`` is off (``/oauth2/token`` unless
    ``code_retry_at_oauth2_token``: RFC 6749 §4.1.2 denies every second use).

    ``resource`` (RFC 8707): the token's audience, one of the code's resources (``core.resources``);
    under the ``registered`` policy its registration is read before the code is spent."""
    code_hash = ctx.hasher.hash(auth_code)
    redemption = _Redemption(
        ctx, auth, auth_code, code_hash, code_verifier, redirect_uri, state, with_refresh_token, address,
        redirect_uri_as_authorized,
    )
    if resource is not None:
        redemption.resource, redemption.accepted = await resources.named(ctx, redemption, resource)
    try:
        spent, code = await code_store.spend(ctx.db, code_hash, redemption.now, redemption)
    except resources.Implied as implied:  # the code's one resource, unnamed (left unspent): named, then spent
        redemption.resource, redemption.accepted = await resources.named(ctx, redemption, implied.resource)
        spent, code = await code_store.spend(ctx.db, code_hash, redemption.now, redemption)
    client = redemption.client
    if not spent:
        if code is not None and client is not None and code.app_id == client.app_id:
            retried = await _replayed(ctx, client, redemption if retry else None, code_hash, redemption.now, address)
            if retried is not None:
                return retried
        raise InvalidGrant(_BAD_CODE)
    issued = access_token.issue(
        ctx, client, jti=redemption.jti, user_id=code.user_id, permissions=redemption.permissions,  # type: ignore[union-attr]
        now=redemption.now, refresh_token=redemption.refresh_token, audience=redemption.audience, family=code_hash,
    )
    return await _with_id_token(ctx, issued, client, code, redemption.now)  # type: ignore[arg-type]


async def _with_id_token(ctx: Context, issued: IssuedToken, client: Client, code: Any, now: int) -> IssuedToken:
    """``issued`` with an ID token when the code's grant is an OpenID one (the code's nonce and
    auth_time), whatever a resource narrowed the access token to."""
    if not openid.is_openid(code.permissions.split(",")):
        return issued
    return await id_tokens.with_id_token(
        ctx, issued, app_id=client.app_id, user_id=code.user_id, auth_time=code.auth_time, nonce=code.nonce, now=now,
        amr=code.amr,
    )


class _Redemption(Caller):
    """One redemption as ``store.codes.spend`` asks for it (a ``store.tokens.Spender``)."""

    __slots__ = (
        "code_hash", "code_verifier", "redirect_uri", "state", "address", "now", "jti", "refresh_token",
        "redirect_uri_as_authorized", "resource", "accepted", "audience", "granted", "permissions",
    )

    def __init__(
        self, ctx: Context, auth: ClientAuthentication, auth_code: str, code_hash: str, code_verifier: str | None,
        redirect_uri: str | None, state: str | None, with_refresh_token: bool, address: str | None,
        redirect_uri_as_authorized: bool,
    ) -> None:
        super().__init__(ctx, auth)
        self.code_hash, self.code_verifier, self.redirect_uri, self.address = code_hash, code_verifier, redirect_uri, address
        self.state = state
        self.now = ctx.now()
        self.jti = new_token_id()
        # Derived from the code, unguessable without the server's key: a retry of this redemption
        # gets the same refresh token, which is stored only hashed.
        self.refresh_token = ctx.hasher.successor(auth_code) if with_refresh_token else None
        self.redirect_uri_as_authorized = redirect_uri_as_authorized
        # RFC 8707: the resource the request named and what it accepts (None: any policy), and
        # what the token is then issued for and with.
        self.resource: str | None = None
        self.accepted: tuple[str, ...] | None = None
        self.audience: str | None = None
        self.granted: tuple[str, ...] = ()
        self.permissions: tuple[str, ...] = ()

    def check(self, code: Any) -> None:
        """What the request must match of the code (its row), besides being the client's: the PKCE
        verifier, the DPoP key the code is bound to (RFC 9449 §10), the redirect_uri and the state.
        Raises InvalidGrant."""
        pkce.check(code.code_challenge, self.code_verifier, self.client)
        if code.dpop_jkt is not None:
            dpop.check_binding(code.dpop_jkt, self.client, "authorization code")  # type: ignore[arg-type]
        if self.redirect_uri is None:
            if self.redirect_uri_as_authorized and code.redirect_uri_included:
                raise InvalidGrant("redirect_uri is required: the authorization request named one.")
        elif self.redirect_uri != code.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the one the code was issued for.")
        if self.state is not None and self.state != code.state:
            raise InvalidGrant("state does not match the one the code was issued with.")

    def narrow(self, code: Any) -> None:
        """What the access token is issued for from ``code`` (its row): the grant (``granted``), and
        the ``permissions`` and ``audience`` a resource (RFC 8707) narrows it to."""
        self.permissions = self.granted = granted = tuple(code.permissions.split(","))
        if code.resources is not None or self.resource is not None:
            self.audience = audience = resources.audience_of(code.resources, self.resource)
            if self.resource is None and resources.policy(self.ctx) == resources.REGISTERED:
                raise resources.Implied(audience)  # type: ignore[arg-type]
            self.permissions = resources.narrowed(granted, self.accepted, audience)  # type: ignore[arg-type]

    def issue(self, code: Any) -> Issue:
        """The rules of redeeming ``code`` (its row, unspent or as the spend returned it); raises
        InvalidGrant. Unredeemed is the spend's own condition (atomic). What the spend writes."""
        ctx, client, now = self.ctx, self.client, self.now
        assert client is not None  # proven before the code is judged
        if code.app_id != client.app_id or code.expires_at <= now:
            raise InvalidGrant(_BAD_CODE)
        self.check(code)
        self.narrow(code)
        scope, granted_scope = " ".join(self.permissions), " ".join(self.granted)
        access = access_token.row(
            ctx, client, jti=self.jti, user_id=code.user_id, code_hash=self.code_hash, scope=scope, now=now,
            audience=self.audience,
        )
        refresh = None
        if self.refresh_token is not None:
            # The refresh token keeps the whole grant, whatever this access token was narrowed to.
            refresh = refresh_row(
                ctx, client, self.refresh_token, code_hash=self.code_hash, user_id=code.user_id, scope=granted_scope,
                access_jti=self.jti, now=now, auth_time=code.auth_time, session_jti=code.session_jti, amr=code.amr,
                dpop_jkt=dpop.refresh_binding(client), resources=code.resources,
            )
        event = audit.entry(
            ctx, "code_redeemed", actor=client.app_id, user_id=code.user_id, app_id=client.app_id,
            address=self.address, now=now, jti=self.jti, key_id=client.key_id,
        )
        return Issue(access, refresh, event)


async def _replayed(
    ctx: Context, client: Client, retry: _Redemption | None, code_hash: str, now: int, address: str | None
) -> IssuedToken | None:
    """A code of the caller's that this call did not spend. If it was redeemed before (or just now,
    by a concurrent caller) by the request ``retry`` repeats, within the grace window, the answer
    that redemption gave (``_retried``), and nothing revoked. Otherwise a replay (RFC 6749 §4.1.2,
    RFC 9700 §4.5): every token it issued is revoked and code_replayed audited, in one transaction,
    and None."""
    async with ctx.db.write() as tx:
        known = await code_store.find(tx, code_hash)
        if known is None or known.redeemed_at is None:
            return None
        again = await _retried(ctx, tx, client, retry, known) if retry is not None else None
        if again is not None:
            await audit.record(
                ctx, tx, "code_retried", actor=client.app_id, user_id=known.user_id, app_id=client.app_id,
                address=address, now=now, jti=again[1], key_id=client.key_id,
            )
        else:
            await token_store.revoke_family(tx, code_hash, now, now + ctx.settings.access_token_ttl)
            await audit.record(
                ctx, tx, "code_replayed", actor=client.app_id, user_id=known.user_id, app_id=client.app_id,
                address=address, now=now, key_id=client.key_id, family_revoked=True,
            )
    if again is None:
        return None
    return await _with_id_token(ctx, again[0], client, known, now)


async def _retried(ctx: Context, tx: Any, client: Client, retry: _Redemption, code: Any) -> tuple[IssuedToken, str] | None:
    """The tokens a redemption of ``code`` (its row, spent) issued, the access token re-signed with
    the same claims (its ``jti`` and the key that redeemed the code are on the code's row, its
    ``iat`` is the redemption's time, its scope and audience the retry's, which repeats the same
    request), and its jti, if ``retry`` repeats that redemption within ``code_retry_grace`` seconds:
    the same key of the same app (the same app, for a client without keys), the code's checks
    passed again, and a family that still holds just what the redemption issued, untouched: the
    access token unexpired and on no deny-list (neither its jti nor its family), and the refresh
    token derived from the code (unrotated, unrevoked, with no newer access token beside it) if
    and only if ``retry`` asks for one. None otherwise. (A retry's DPoP proof binds the token
    re-signed to its key, which the redemption's proof may not have named: the code, if bound,
    still needs its own key.)"""
    grace, now = ctx.settings.code_retry_grace, retry.now
    # Timestamps are whole seconds: a grace of 0 must mean none, not "within the same second".
    if grace <= 0 or now - code.redeemed_at > grace:
        return None
    try:
        retry.check(code)
        retry.narrow(code)
    except (InvalidGrant, resources.Implied):
        return None
    jti = code.access_jti
    if jti is None or code.app_id != client.app_id or code.key_id != client.key_id:
        return None
    if code.redeemed_at + ctx.settings.access_token_ttl <= now:
        return None
    refresh = await token_store.refresh_of_family(tx, retry.code_hash)
    if retry.refresh_token is None:
        if refresh:
            return None
    elif (
        len(refresh) != 1
        or refresh[0].token_hash != ctx.hasher.hash(retry.refresh_token)
        or refresh[0].rotated_at is not None
        or refresh[0].revoked_at is not None
        or refresh[0].access_jti != jti
    ):
        return None
    if await token_store.denied(tx, retry.code_hash, jti):
        return None
    issued = access_token.issue(
        ctx, client, jti=jti, user_id=code.user_id, permissions=retry.permissions, now=now,
        refresh_token=retry.refresh_token, audience=retry.audience, family=retry.code_hash, iat=code.redeemed_at,
    )
    return issued, jti
