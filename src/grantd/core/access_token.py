"""Access tokens as JWTs (RFC 9068): their claims and their signature. They have no row.

An access token is self-contained: nothing is written when one is issued. What can end it before
its ``exp`` is kept where it is decided, and read by introspection (``core.introspection``) through
two private claims every token carries when it has them:

- ``key_id``: the id of the app key that authenticated its issue (not a secret): a revoked key
  ends its tokens. Absent for a client without keys.
- ``family``: the hash of the authorization (or device) code it descends from, the name of its
  family: a replayed code or refresh token, a log-out, a withdrawn consent or a locked or deleted
  account puts the family on a deny-list (``store.tokens.deny_families``). Absent for
  client_credentials.

Its ``jti`` goes on another deny-list when the app revokes it (RFC 7009), and its ``iat`` is
compared with its app's ``tokens_revoked_at`` (an app enabled again). The particulars of a new
token are built here, once, for every grant that issues one (``row``).
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
    jkt: str | None = None, audience: str | None = None, key_id: str | None = None, family: str | None = None,
) -> str:
    """The signed token (RFC 9068 §2.2): ``sub`` is the user, or the app acting on its own behalf;
    ``aud`` the resource it was requested for (RFC 8707), else the server's audience; ``cnf.jkt``
    the DPoP key it is bound to, if any (RFC 9449 §6.1); ``key_id`` and ``family`` what can end it
    (the module's docstring)."""
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
    if key_id is not None:
        claims["key_id"] = key_id
    if family is not None:
        claims["family"] = family
    return ctx.signing.sign(claims, TYPE)


def issue(
    ctx: Context, client: Client, *, jti: str, user_id: str | None, permissions: tuple[str, ...], now: int,
    refresh_token: str | None = None, audience: str | None = None, family: str | None = None, iat: int | None = None,
) -> IssuedToken:
    """The token response for a new access token of ``family`` (None: client_credentials), valid
    ``access_token_ttl`` from ``iat`` (default ``now``). An answer given again (a retry within a
    grace window) passes the first answer's ``jti`` and ``iat``: the same claims, signed anew."""
    iat = now if iat is None else iat
    ctx.key_use.used(client.key_id, now)
    ttl, jkt = ctx.settings.access_token_ttl, client.dpop_jkt
    token = sign(
        ctx, jti=jti, app_id=client.app_id, user_id=user_id, permissions=permissions, iat=iat, exp=iat + ttl,
        jkt=jkt, audience=audience, key_id=client.key_id, family=family,
    )
    expires_in = iat + ttl - now
    if jkt is None:
        return IssuedToken(token, expires_in, " ".join(permissions), refresh_token)
    return IssuedToken(token, expires_in, " ".join(permissions), refresh_token, token_type=dpop.SCHEME)


def row(
    ctx: Context, client: Client, *, jti: str, user_id: str | None, code_hash: str | None, scope: str, now: int,
    audience: str | None = None,
) -> dict[str, Any]:
    """The new access token's particulars (never stored; what its claims say): ``code_hash`` names
    its family (the authorization code it descends from; None for client_credentials); ``key_id``
    the key that authenticated its issue; ``audience`` the resource it is for (RFC 8707; None: the
    server's audience); ``dpop_jkt`` the key of the request's DPoP proof. Every grant builds them
    here, before anything is written: so an app that requires DPoP (RFC 9449 §5.2) gets no token
    without a proof."""
    require_proof(client)
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


def require_proof(client: Client) -> None:
    """An app that requires DPoP (RFC 9449 §5.2) gets no access token without a proof: every grant
    checks it before anything is written (``row``; client_credentials, which builds no row, directly)."""
    if client.dpop_required:
        dpop.require_proof(client)


def claims_of(ctx: Context, token: str) -> dict[str, Any] | None:
    """The claims of one of grantd's access tokens whose signature and issuer hold; None for
    anything else (a refresh token, a forged or foreign JWT). Expiry is the caller's to judge."""
    if token.count(".") != 2:
        return None
    try:
        return ctx.signing.verify(token, typ=TYPE, issuer=ctx.settings.issuer)
    except InvalidSignature:
        return None
