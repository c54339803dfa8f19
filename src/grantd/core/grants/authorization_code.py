"""The authorization_code grant at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9700
§4.5): a code is redeemed at most once, and a code presented again revokes everything it issued.

Spending the code is atomic and writes the tokens and the code_redeemed audit row with it or not
at all (``store.codes.spend``, on either database). A code found already redeemed, or spent by a
concurrent caller in between, is a replay: its family is revoked and code_replayed audited, in a
transaction of their own. One caller may ask for a grace instead (``retry_grace``: the Neucron v2
token request, a GET that Neucron's SDK retries on a timeout or a 5xx): the identical request
repeated within ``code_retry_grace`` seconds of the redemption gets the access token it issued.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from grantd.core import access_token, audit, id_tokens, openid, pkce
from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import Caller, ClientAuthentication, missing
from grantd.core.clients import Client
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant
from grantd.core.grants.refresh_token import refresh_row
from grantd.crypto.secrets import new_secret, new_token_id
from grantd.store import codes as code_store
from grantd.store import tokens as token_store
from grantd.store.tokens import Issue

GRANT_TYPE = "authorization_code"
_BAD_CODE = "The authorization code is unknown, expired, already used, or belongs to another app."


def token_request(
    ctx: Context, auth: ClientAuthentication, params: Mapping[str, str], address: str | None
) -> Awaitable[IssuedToken]:
    """``grant_type=authorization_code`` (RFC 6749 §4.1.3), with a refresh token."""
    code = params.get("code")
    if code is None:
        return missing(ctx, auth, "code")
    return redeem(
        ctx, auth, code, code_verifier=params.get("code_verifier"), redirect_uri=params.get("redirect_uri"),
        with_refresh_token=True, address=address, redirect_uri_as_authorized=True,
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
    retry_grace: bool = False,
    address: str | None = None,
    redirect_uri_as_authorized: bool = False,
) -> IssuedToken:
    """Exchange a code for tokens, at most once, for the client ``auth`` proves (the Neucron token
    requests and the OAuth 2.0 grant alike). The client is proven before anything about the code is
    looked at; on PostgreSQL its key is read with the code, in one SELECT.

    ``redirect_uri`` and ``state``, when given, must be those the code was issued with (checked
    before the spend: a mismatch leaves the code unspent). With ``redirect_uri_as_authorized`` (the
    OAuth 2.0 token request, RFC 6749 §4.1.3), ``redirect_uri`` must be given when the authorization
    request named one. With ``retry_grace``, a code of the
    caller's already redeemed is first judged as a retry (``_retried``) before it is a replay."""
    code_hash = ctx.hasher.hash(auth_code)
    redemption = _Redemption(ctx, auth, code_hash, code_verifier, redirect_uri, state, with_refresh_token, address)
    redemption.redirect_uri_as_authorized = redirect_uri_as_authorized
    spent, code = await code_store.spend(ctx.db, code_hash, redemption.now, redemption)
    client = redemption.client
    if not spent:
        if code is not None and client is not None and code.app_id == client.app_id:
            retried = await _replayed(ctx, client, redemption if retry_grace else None, code_hash, redemption.now, address)
            if retried is not None:
                return retried
        raise InvalidGrant(_BAD_CODE)
    permissions = tuple(code.permissions.split(","))  # type: ignore[union-attr]
    issued = access_token.issue(
        ctx, client, jti=redemption.jti, user_id=code.user_id, permissions=permissions,  # type: ignore[union-attr]
        now=redemption.now, refresh_token=redemption.refresh_token,
    )
    if openid.is_openid(permissions):
        issued = await id_tokens.with_id_token(
            ctx, issued, app_id=client.app_id, user_id=code.user_id, auth_time=code.auth_time,  # type: ignore[union-attr]
            nonce=code.nonce, now=redemption.now,  # type: ignore[union-attr]
        )
    return issued


class _Redemption(Caller):
    """One redemption as ``store.codes.spend`` asks for it (a ``store.tokens.Spender``)."""

    __slots__ = (
        "code_hash", "code_verifier", "redirect_uri", "state", "address", "now", "jti", "refresh_token",
        "redirect_uri_as_authorized",
    )

    def __init__(
        self, ctx: Context, auth: ClientAuthentication, code_hash: str, code_verifier: str | None,
        redirect_uri: str | None, state: str | None, with_refresh_token: bool, address: str | None,
    ) -> None:
        super().__init__(ctx, auth)
        self.code_hash, self.code_verifier, self.redirect_uri, self.address = code_hash, code_verifier, redirect_uri, address
        self.state = state
        self.now = ctx.now()
        self.jti = new_token_id()
        self.refresh_token = new_secret() if with_refresh_token else None
        self.redirect_uri_as_authorized = False

    def issue(self, code: Any) -> Issue:
        """The rules of redeeming ``code`` (its row, unspent or as the spend returned it); raises
        InvalidGrant. Unredeemed is the spend's own condition (atomic). What the spend writes."""
        ctx, client, now = self.ctx, self.client, self.now
        assert client is not None  # proven before the code is judged
        if code.app_id != client.app_id or code.expires_at <= now:
            raise InvalidGrant(_BAD_CODE)
        pkce.check(code.code_challenge, self.code_verifier, client)
        if self.redirect_uri is None:
            if self.redirect_uri_as_authorized and code.redirect_uri_included:
                raise InvalidGrant("redirect_uri is required: the authorization request named one.")
        elif self.redirect_uri != code.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the one the code was issued for.")
        if self.state is not None and self.state != code.state:
            raise InvalidGrant("state does not match the one the code was issued with.")
        scope = " ".join(code.permissions.split(","))
        access = access_token.row(ctx, client, jti=self.jti, user_id=code.user_id, code_hash=self.code_hash, scope=scope, now=now)
        refresh = None
        if self.refresh_token is not None:
            refresh = refresh_row(
                ctx, client, self.refresh_token, code_hash=self.code_hash, user_id=code.user_id, scope=scope,
                access_jti=self.jti, now=now, auth_time=code.auth_time, session_jti=code.session_jti,
            )
        event = audit.entry(
            ctx, "code_redeemed", actor=client.app_id, user_id=code.user_id, app_id=client.app_id,
            address=self.address, now=now, jti=self.jti, key_id=client.key_id,
        )
        return Issue(access, refresh, event)


async def _replayed(
    ctx: Context, client: Client, retry: _Redemption | None, code_hash: str, now: int, address: str | None
) -> IssuedToken | None:
    """A code of the caller's that this call did not spend: if it was redeemed before (or just now,
    by a concurrent caller), it is a replay (RFC 6749 §4.1.2, RFC 9700 §4.5): revoke every token it
    issued and audit code_replayed, in one transaction, and None. Unless ``retry`` (the redemption
    that found the code spent, when its caller asked for the grace) is the identical request within
    the grace window: then the answer the redemption gave (``_retried``), and nothing revoked."""
    async with ctx.db.write() as tx:
        known = await code_store.find(tx, code_hash)
        if known is None or known.redeemed_at is None:
            return None
        if retry is not None:
            again = await _retried(ctx, tx, client, retry, known)
            if again is not None:
                return again
        await token_store.revoke_family(tx, code_hash, now)
        await audit.record(
            ctx, tx, "code_replayed", actor=client.app_id, user_id=known.user_id, app_id=client.app_id,
            address=address, now=now, key_id=client.key_id, family_revoked=True,
        )
    return None


async def _retried(ctx: Context, tx: Any, client: Client, retry: _Redemption, code: Any) -> IssuedToken | None:
    """The access token a redemption of ``code`` (its row, spent) issued, re-signed with the same
    claims, if ``retry`` repeats that redemption within ``code_retry_grace`` seconds: the same key
    of the same app, the code's redirect_uri and state, and a family that still holds just that
    access token, live, and no refresh token (a redemption with a refresh token is no such request).
    None otherwise."""
    grace, now = ctx.settings.code_retry_grace, retry.now
    # Timestamps are whole seconds: a grace of 0 must mean none, not "within the same second".
    if grace <= 0 or now - code.redeemed_at > grace:
        return None
    if retry.state is None or retry.redirect_uri != code.redirect_uri or retry.state != code.state:
        return None
    issued, has_refresh = await token_store.issued_from_code(tx, retry.code_hash)
    if has_refresh or len(issued) != 1:
        return None
    access = issued[0]
    if (
        access.revoked_at is not None
        or access.expires_at <= now
        or access.app_id != client.app_id
        or access.key_id != client.key_id
        or access.issued_at != code.redeemed_at
    ):
        return None
    return access_token.reissue(ctx, access, now)
