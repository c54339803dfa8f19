"""The client_credentials grant (RFC 6749 §4.4): an app acting on its own behalf, ``sub`` the app.

Not audited (a hot path with no decision worth a row), and nothing is written: the token is
self-contained (``core.access_token``), and its key's last use is kept in memory and flushed now
and then (``core.key_use``).
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
    now = ctx.now()
    # Nothing is written: the token is self-contained, and its key's last use is kept in memory (core.key_use).
    access_token.require_proof(client)
    return access_token.issue(
        ctx, client, jti=new_token_id(), user_id=None, permissions=permissions, now=now, audience=audience
    )
