"""Access tokens as JWTs (RFC 9068): their claims, their signature, and the row that records each.

Every access token is recorded (``store.tokens``) so that it can be revoked and introspected; the
row is built here, once, for every grant that issues one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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


def sign(
    ctx: Context, *, jti: str, app_id: str, user_id: str | None, permissions: tuple[str, ...], iat: int, exp: int,
    audience: str | None = None,
) -> str:
    """The signed token (RFC 9068 §2.2): ``sub`` is the user, or the app acting on its own behalf;
    ``aud`` the resource it was requested for (RFC 8707), else the server's audience."""
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
    return ctx.signing.sign(claims, TYPE)


def issue(
    ctx: Context, client: Client, *, jti: str, user_id: str | None, permissions: tuple[str, ...], now: int,
    refresh_token: str | None = None, audience: str | None = None,
) -> IssuedToken:
    """The token response for a new access token, valid ``access_token_ttl`` from ``now``."""
    ttl = ctx.settings.access_token_ttl
    token = sign(
        ctx, jti=jti, app_id=client.app_id, user_id=user_id, permissions=permissions, iat=now, exp=now + ttl,
        audience=audience,
    )
    return IssuedToken(token, ttl, " ".join(permissions), refresh_token)


def reissue(ctx: Context, access: Any, now: int, refresh_token: str | None = None) -> IssuedToken:
    """The token response again for an access token already issued (``access``: its row, as
    ``store.tokens`` reads it): the same claims (``jti``, ``iat``, ``exp`` included), signed anew."""
    token = sign(
        ctx, jti=access.jti, app_id=access.app_id, user_id=access.user_id,
        permissions=tuple(access.scope.split(" ")), iat=access.issued_at, exp=access.expires_at,
        audience=access.audience,
    )
    return IssuedToken(token, access.expires_at - now, access.scope, refresh_token)


def row(
    ctx: Context, client: Client, *, jti: str, user_id: str | None, code_hash: str | None, scope: str, now: int,
    audience: str | None = None,
) -> dict[str, Any]:
    """The access token's row (``store.tokens.ACCESS_COLUMNS``): ``code_hash`` names its family
    (the authorization code it descends from; None for client_credentials); ``audience`` the
    resource it is for (RFC 8707; None: the server's audience)."""
    return {
        "jti": jti,
        "app_id": client.app_id,
        "user_id": user_id,
        "key_id": client.key_id,
        "code_hash": code_hash,
        "scope": scope,
        "issued_at": now,
        "expires_at": now + ctx.settings.access_token_ttl,
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
