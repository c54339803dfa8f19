"""The client_credentials grant (RFC 6749 §4.4): an app acting on its own behalf, ``sub`` the app.

Not audited (a hot path with no decision worth a row); the token's row is its record.
"""

from __future__ import annotations

from collections.abc import Mapping

from grantd.core import access_token, resources
from grantd.core import permissions as perms
from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import ClientAuthentication
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant, UnauthorizedClient
from grantd.crypto.secrets import new_token_id
from grantd.store import apps as app_store
from grantd.store import tokens as token_store

GRANT_TYPE = "client_credentials"


async def token_request(ctx: Context, auth: ClientAuthentication, params: Mapping[str, str], address: str | None) -> IssuedToken:
    """``grant_type=client_credentials``: a confidential client only; ``scope`` within the app's
    permissions; ``resource`` (RFC 8707) the token's audience, as the policy accepts it."""
    client = await auth.authenticate(ctx)
    if client.is_public:
        raise UnauthorizedClient("A public client may not use the client_credentials grant.")
    app_permissions = client.app_permissions
    if app_permissions is None:
        async with ctx.db.read() as conn:
            app = await app_store.live(conn, client.app_id)
        if app is None:
            raise InvalidGrant("The app is disabled.")
        app_permissions = app.permissions
    allowed = perms.parse(app_permissions)
    scope = params.get("scope")
    permissions = allowed if scope is None else perms.parse(scope, field="scope", separator=" ")
    ctx.catalog.require_allowed(permissions, allowed)
    audience = params.get(resources.PARAMETER)
    if audience is not None:
        audience = resources.one(audience)
        permissions = resources.narrowed(permissions, await resources.accepted_by(ctx, audience), audience)
    now, jti = ctx.now(), new_token_id()
    await token_store.record_access_token(
        ctx.db,
        access_token.row(
            ctx, client, jti=jti, user_id=None, code_hash=None, scope=" ".join(permissions), now=now, audience=audience
        ),
    )
    return access_token.issue(ctx, client, jti=jti, user_id=None, permissions=permissions, now=now, audience=audience)
