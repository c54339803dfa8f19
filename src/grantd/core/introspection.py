"""Token introspection (RFC 7662), for a confidential client about its own tokens.

The caller's key and the token's state are read by one SELECT; the key's secret is verified
before anything about the token is looked at. A token that is not the caller's, or not active,
is only ``{"active": false}`` (RFC 7662 §2.2).

An access token has no row: its state is what can end it (``access_is_live``), read from the
database on every introspection, so that a revocation made by any process is seen by every
process's next one (no cache).
"""

from __future__ import annotations

from typing import Any

from grantd.core import access_token
from grantd.core.client_auth import ClientAuthentication
from grantd.core.context import Context
from grantd.core.errors import InvalidClient, InvalidRequest, InvalidToken
from grantd.store import tokens as token_store

_ACCESS_CLAIMS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti")


def is_live(row: Any, now: int) -> bool:
    """Whether a refresh token's state (``store.tokens.refresh_token_state``: its row with its
    app's ``disabled_at`` and its key's ``revoked_at``) lets the token act: known, not revoked,
    unexpired, its app live, and the key that authenticated its issue (if any) not revoked: revoking
    a key or disabling an app ends what it issued. The one rule for introspection and every other
    reader of a refresh token's state (``access_is_live`` is the rule for access tokens)."""
    return (
        row is not None and row.revoked_at is None and row.expires_at > now and row.app_disabled_at is None
        and row.key_revoked_at is None
    )


def access_is_live(claims: dict[str, Any], state: Any, now: int) -> bool:
    """Whether an access token (its verified ``claims``) may act, given what can end it (``state``,
    ``store.tokens.access_token_state``): unexpired; its app known and not disabled, and the token
    issued after the app's ``tokens_revoked_at`` (strictly: one issued in that same second is
    inactive, failing closed, since ``iat`` is whole seconds); the key its ``key_id`` claim names
    still the app's and not revoked; neither its ``family`` nor its ``jti`` on a deny-list. The one
    rule for introspection and every other reader of an access token's state."""
    exp, iat = claims.get("exp"), claims.get("iat")
    if state is None or not isinstance(exp, int) or not isinstance(iat, int) or exp <= now:
        return False
    if state.app_disabled_at is not None or (state.tokens_revoked_at is not None and iat <= state.tokens_revoked_at):
        return False
    if claims.get("key_id") is not None and (state.key_id is None or state.key_revoked_at is not None):
        return False
    return state.family_revoked is None and state.jti_revoked is None


async def live_user_claims(ctx: Context, token: str, dpop_jkt: str | None = None) -> dict[str, Any]:
    """The claims of an access token grantd issued to an app acting for a user, judged as
    introspection judges it (signature and ``typ`` at+jwt, then ``access_is_live``: not expired,
    not revoked, its app and key live), for grantd's own resources (UserInfo, the v2 user info). An app's own
    token (client_credentials) acts for nobody: InvalidToken, as for anything else.

    ``dpop_jkt``: the key of the request's DPoP proof (RFC 9449 §7), already checked; a token bound
    to a key (``cnf.jkt``) is accepted only with a proof by that key, never as a bearer token, and
    a bearer token never with the DPoP scheme."""
    claims = access_token.claims_of(ctx, token)
    refused = InvalidToken("The access token is expired, revoked, or not issued for a user.")
    if claims is None:
        raise refused
    cnf = claims.get("cnf")
    bound = cnf.get("jkt") if isinstance(cnf, dict) else None
    if bound != dpop_jkt:
        if dpop_jkt is None:
            raise InvalidToken("The access token is DPoP-bound: send it as Authorization: DPoP, with a DPoP proof.")
        if bound is None:
            raise InvalidToken("The access token is not DPoP-bound: send it as Authorization: Bearer.")
        raise InvalidToken("The access token is bound to another DPoP key than the proof's.")
    jti, user_id, now = claims.get("jti"), claims.get("user_id"), ctx.now()
    if not isinstance(jti, str) or not isinstance(user_id, str) or not isinstance(claims.get("exp"), int):
        raise refused
    if claims["exp"] <= now:
        raise refused
    if claims.get("aud") != ctx.settings.audience:  # a token for another resource (RFC 8707) is not grantd's to honour
        raise refused
    async with ctx.db.read() as conn:
        state = await token_store.access_token_state(conn, claims)
    if not access_is_live(claims, state, now):
        raise refused
    return claims


async def introspect(ctx: Context, auth: ClientAuthentication, token: str | None) -> dict[str, Any]:
    """What ``token`` is, if it is active and the caller's own. A public client, or a request
    without a token, is refused, the client's authentication first."""
    key_id = auth.key_id
    if key_id is None or token is None:
        client = await auth.authenticate(ctx)
        if client.is_public:
            raise InvalidClient("Introspection needs a confidential client's secret or assertion.")
        if token is None:
            raise InvalidRequest("token is required.")
        # A client proven without a key (RFC 7523 private_key_jwt): the token is read on its own.
        claims = access_token.claims_of(ctx, token)
        async with ctx.db.read() as conn:
            if claims is not None:
                row = await token_store.access_token_state(conn, claims)
            else:
                row = await token_store.refresh_token_state(conn, ctx.hasher.hash(token))
    else:
        claims = access_token.claims_of(ctx, token)
        async with ctx.db.read() as conn:
            if claims is not None:
                key, row = await token_store.live_key_and_access_token_state(conn, key_id, claims)
            else:
                key, row = await token_store.live_key_and_refresh_token_state(conn, key_id, ctx.hasher.hash(token))
        client = auth.proven(ctx, key)
    now = ctx.now()
    if claims is not None:
        if not access_is_live(claims, row, now) or claims.get("client_id") != client.app_id:
            return {"active": False}
        result = {name: claims[name] for name in _ACCESS_CLAIMS}
        if "user_id" in claims:
            result["user_id"] = claims["user_id"]
        if "cnf" in claims:  # RFC 9449 §6.2: the key a DPoP-bound token is bound to
            return {"active": True, **result, "cnf": claims["cnf"], "token_type": "DPoP"}
        return {"active": True, **result, "token_type": "Bearer"}
    if not is_live(row, now) or row.app_id != client.app_id or row.rotated_at is not None:
        return {"active": False}
    return {
        "active": True,
        "scope": row.scope,
        "client_id": row.app_id,
        "sub": row.user_id,
        "user_id": row.user_id,
        "exp": row.expires_at,
        "iat": row.issued_at,
        "iss": ctx.settings.issuer,
        "token_type": "refresh_token",
        **({"cnf": {"jkt": row.dpop_jkt}} if row.dpop_jkt is not None else {}),
    }
