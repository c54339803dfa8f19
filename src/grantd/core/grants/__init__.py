"""The grants of the token endpoint (RFC 6749 §3.2), one module per ``grant_type``.

Each module offers ``token_request(ctx, auth, params, address)``, awaited for an ``IssuedToken``: ``auth`` is how
the client authenticates (a ``grantd.core.client_auth`` value, not yet proven: the grant proves it
when and how its rules need), ``params`` the request's parameters by their RFC names. A new grant
is one module and one entry in ``GRANT_TYPES``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import ClientAuthentication
from grantd.core.context import Context
from grantd.core.errors import InvalidRequest, UnsupportedGrantType
from grantd.core.grants import authorization_code, client_credentials, device_code, refresh_token

TokenRequest = Callable[[Context, ClientAuthentication, Mapping[str, str], "str | None"], Awaitable[IssuedToken]]

GRANT_TYPES: dict[str, TokenRequest] = {
    authorization_code.GRANT_TYPE: authorization_code.token_request,
    refresh_token.GRANT_TYPE: refresh_token.token_request,
    client_credentials.GRANT_TYPE: client_credentials.token_request,
    device_code.GRANT_TYPE: device_code.token_request,
}


def token_request(
    ctx: Context, auth: ClientAuthentication, params: Mapping[str, str], address: str | None
) -> Awaitable[IssuedToken]:
    """The token endpoint's request, by its ``grant_type`` (the grant's own coroutine: no frame of
    this dispatch stays on the hot path). A request without one, or with one not supported, is
    refused after the client is authenticated (its own errors come first)."""
    grant_type = params.get("grant_type")
    grant = GRANT_TYPES.get(grant_type) if grant_type is not None else None
    if grant is None:
        return _refused(ctx, auth, grant_type)
    return grant(ctx, auth, params, address)


async def _refused(ctx: Context, auth: ClientAuthentication, grant_type: str | None) -> IssuedToken:
    await auth.authenticate(ctx)
    if grant_type is None:
        raise InvalidRequest("grant_type is required.")
    raise UnsupportedGrantType(f"grant_type {grant_type[:64]!r} is not supported.")
