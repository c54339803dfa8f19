"""OpenID Connect at the token endpoint and the UserInfo endpoint: what is read to tell an app who
signed in (the app's OpenID settings, the person's profile), once for both.

The claims and the token themselves are ``core.openid``'s.
"""

from __future__ import annotations

from typing import Any

from grantd.core import introspection, openid
from grantd.core.access_token import IssuedToken
from grantd.core.clients import OpenIDSettings
from grantd.core.context import Context
from grantd.core.errors import InsufficientScope, InvalidToken
from grantd.core.profile import profile_of
from grantd.store import apps as app_store


async def audience_of(ctx: Context, app_id: str) -> openid.Audience:
    """The app as an ID token's or a UserInfo answer's audience (InvalidToken when it is gone)."""
    async with ctx.db.read() as conn:
        app = await app_store.live(conn, app_id)
    if app is None:
        raise InvalidToken("The app is disabled or no longer exists.")
    return openid.Audience(app.id, OpenIDSettings.of(app), tuple(app_store.redirect_uris_of(app)))


async def identity(ctx: Context, app_id: str, user_id: str, scope: tuple[str, ...]) -> tuple[openid.Audience, dict[str, Any]]:
    """The app's audience and what ``scope`` releases to it about the user, ``sub`` first."""
    audience = await audience_of(ctx, app_id)
    claims = {"sub": audience.subject(ctx, user_id), **openid.claims_of(await profile_of(ctx, user_id), scope)}
    return audience, claims


async def with_id_token(
    ctx: Context, issued: IssuedToken, *, app_id: str, user_id: str, auth_time: int | None, nonce: str | None, now: int,
    amr: str | None = None,
) -> IssuedToken:
    """``issued`` with the ID token of its grant (Core §3.1.3.3): the claims of its scope."""
    audience, claims = await identity(ctx, app_id, user_id, tuple(issued.scope.split(" ")))
    del claims["sub"]  # the ID token's own, from the same audience
    token = openid.id_token(
        ctx, audience, user_id=user_id, auth_time=auth_time, nonce=nonce, access_token=issued.access_token,
        claims=claims, now=now, amr=amr,
    )
    return issued._replace(id_token=token)


async def userinfo(ctx: Context, token: str, dpop_jkt: str | None = None) -> dict[str, Any]:
    """The UserInfo answer (Core §5.3) for an access token: the claims its scope releases, with
    the same ``sub`` as the app's ID tokens. InvalidToken for a token that is not live or acts for
    no user; InsufficientScope for one not granted ``openid``."""
    claims = await introspection.live_user_claims(ctx, token, dpop_jkt)
    scope = tuple(str(claims.get("scope", "")).split(" "))
    if not openid.is_openid(scope):
        raise InsufficientScope("The access token was not granted the openid scope.")
    return (await identity(ctx, claims["client_id"], claims["user_id"], scope))[1]
