"""Access tokens as JWTs (RFC 9068): their claims, their signature, and the row that records each.

Every access token is recorded (``store.tokens``) so that it can be revoked and introspected; the
row is built here, once, for every grant that issues one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from grantd.core import dpop
from grantd.core.clients import Client
from grantd.core.context import Context
from grantd.crypto.jws import InvalidSignature

TYPE = "at+jwt"  # RFC 9068 §2.1: the JWT's ``typ`` header


class IssuedToken(NamedTuple):
    """A token response (RFC 6749 §5.1), dialect-free."""

    access_token: str
    expires_in: int
    scope: str  # space-separated, as in the token's `scope` claim
    refresh_token: str | None = None
    id_token: str | None = None  # OpenID Connect Core §3.1.3.3, for a grant with the openid scope
    token_type: str = "Bearer"  # or DPoP, for a token bound to the client's key (RFC 9449 §5)


def sign(
    ctx: Context, *, jti: str, app_id: str, user_id: str | None, permissions: tuple[str, ...], iat: int, exp: int,
    jkt: str | None = None, audience: str | None = None,
) -> str:
    """The signed token (RFC 9068 §2.2): ``sub`` is the user, or the app acting on its own behalf;
    ``aud`` the resource it was requested for (RFC 8707), else the server's audience; ``cnf.jkt``
    the DPoP key it is bound to, if any (RFC 9449 §6.1)."""
    claims: dict[str, Any] = {
        "iss": ctx.settings.issuer,
        "sub": user_id or app_id,
        "aud": audience or ctx.settings.audience,
        "client_id": app_id,
        "scope": " ".join(permissions),
        "iat": iat,
        "exp": exp,
        "jti": jti,
    }
    if user_id is not None:
        claims["user_id"] = user_id
    claims["permissions"] = list(permissions)
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return ctx.signing.sign(claims, TYPE)


def issue(
    ctx: Context, client: Client, *, jti: str, user_id: str | None, permissions: tuple[str, ...], now: int,
    refresh_token: str | None = None, audience: str | None = None,
) -> IssuedToken:
    """The token response for a new access token, valid ``access_token_ttl`` from ``now``."""
    ttl, jkt = ctx.settings.access_token_ttl, client.dpop_jkt
    token = sign(
        ctx, jti=jti, app_id=client.app_id, user_id=user_id, permissions=permissions, iat=now, exp=now + ttl,
        jkt=jkt, audience=audience,
    )
    if jkt is None:
        return IssuedToken(token, ttl, " ".join(permissions), refresh_token)
    return IssuedToken(token, ttl, " ".join(permissions), refresh_token, token_type=dpop.SCHEME)


def reissue(ctx: Context, access: Any, now: int, refresh_token: str | None = None) -> IssuedToken:
    """The token response again for an access token already issued (``access``: its row, as
    ``store.tokens`` reads it): the same claims (``jti``, ``iat``, ``exp`` included), signed anew."""
    token = sign(
        ctx, jti=access.jti, app_id=access.app_id, user_id=access.user_id,
        permissions=tuple(access.scope.split(" ")), iat=access.issued_at, exp=access.expires_at, jkt=access.dpop_jkt,
        audience=access.audience,
    )
    token_type = "Bearer" if access.dpop_jkt is None else dpop.SCHEME
    return IssuedToken(token, access.expires_at - now, access.scope, refresh_token, token_type=token_type)


def row(
    ctx: Context, client: Client, *, jti: str, user_id: str | None, code_hash: str | None, scope: str, now: int,
    audience: str | None = None,
) -> dict[str, Any]:
    """The access token's row (``store.tokens.ACCESS_COLUMNS``): ``code_hash`` names its family
    (the authorization code it descends from; None for client_credentials); ``audience`` the
    resource it is for (RFC 8707; None: the server's audience); ``dpop_jkt`` the key of the
    request's DPoP proof. Every grant builds its token's row here, before anything is written: so
    an app that requires DPoP (RFC 9449 §5.2) gets no token without a proof."""
    if client.dpop_required:
        dpop.require_proof(client)
    return {
        "jti": jti,
        "app_id": client.app_id,
        "user_id": user_id,
        "key_id": client.key_id,
        "code_hash": code_hash,
        "scope": scope,
        "issued_at": now,
        "expires_at": now + ctx.settings.access_token_ttl,
        "dpop_jkt": client.dpop_jkt,
        "audience": audience,
    }


def claims_of(ctx: Context, token: str) -> dict[str, Any] | None:
    """The claims of one of grantd's access tokens whose signature and issuer hold; None for
    anything else (a refresh token, a forged or foreign JWT). Expiry is the caller's to judge."""
    if token.count(".") != 2:
        return None
    try:
        return ctx.signing.verify(token, typ=TYPE, issuer=ctx.settings.issuer)
    except InvalidSignature:
        return None
