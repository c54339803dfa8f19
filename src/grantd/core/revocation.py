"""Token revocation (RFC 7009): a client revokes its own tokens; a refresh token takes its whole
family with it. Unknown tokens and other apps' tokens are ignored, as the RFC asks (§2.2: the
answer is the same). An access token has no row: its jti goes on a deny-list until its exp, which
every process's introspection reads (``store.tokens.revoke_access_token``)."""

from __future__ import annotations

from grantd.core import access_token
from grantd.core.client_auth import ClientAuthentication
from grantd.core.context import Context
from grantd.core.errors import InvalidRequest
from grantd.store import tokens as token_store


async def revoke(ctx: Context, auth: ClientAuthentication, token: str | None) -> None:
    """Revoke ``token`` if it is the authenticated caller's; a request without one is refused
    after the client's authentication."""
    client = await auth.authenticate(ctx)
    if token is None:
        raise InvalidRequest("token is required.")
    now = ctx.now()
    claims = access_token.claims_of(ctx, token)
    async with ctx.db.write() as tx:
        if claims is not None:
            # The caller's own, unexpired token goes on the deny-list until its exp (after it,
            # nothing needs to deny it).
            exp = claims.get("exp")
            if claims.get("client_id") == client.app_id and isinstance(exp, int) and exp > now:
                await token_store.revoke_access_token(tx, claims["jti"], exp)
            return
        row = await token_store.refresh_token_state(tx, ctx.hasher.hash(token))
        if row is not None and row.app_id == client.app_id:
            await token_store.revoke_family(tx, row.code_hash, now, now + ctx.settings.access_token_ttl)
