"""grantd's SDK for resource servers: verify grantd's access tokens and require permissions.

Importing it needs only PyJWT (with ``cryptography``); httpx is imported on the first
network call, and Starlette/FastAPI only when ``require_permissions`` or
``RequirePermissionsMiddleware`` is used. None of the server's own dependencies
(SQLAlchemy, FastAPI, pydantic, …) are imported.

>>> from grantd.sdk import TokenVerifier, InvalidTokenError
>>> verifier = TokenVerifier("https://auth.example.com")          # doctest: +SKIP
>>> token = verifier.verify(bearer_token)                          # doctest: +SKIP
>>> token.user_id, token.app_id, token.permissions                 # doctest: +SKIP

With FastAPI::

    from grantd.sdk import AccessToken, TokenVerifier, require_permissions

    verifier = TokenVerifier("https://auth.example.com")

    @app.get("/me")
    async def me(token: AccessToken = Depends(require_permissions("read_profile", verifier=verifier))):
        return {"user_id": token.user_id}

Every failure to verify a token raises :class:`InvalidTokenError`; its ``reason`` says why.

DPoP-bound tokens (RFC 9449) are verified with the request they come with::

    token = await verifier.averify_request(request.method, str(request.url),
                                           request.headers.get("authorization"), request.headers.getlist("dpop"))

(``require_permissions`` and ``RequirePermissionsMiddleware`` do this for every request). A resource
server that names itself, ``TokenVerifier(issuer, resource="https://mcp.example.com/mcp")``, accepts
only tokens whose ``aud`` is that resource, and ``protect(app, verifier)`` serves its RFC 9728
metadata beside requiring tokens (see docs/mcp.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grantd.sdk.dpop import DPoPNonces, ReplayCache, ReplayStore
from grantd.sdk.metadata import metadata_url, protected_resource_metadata
from grantd.sdk.verifier import REASONS, AccessToken, InvalidTokenError, TokenVerifier

if TYPE_CHECKING:
    from grantd.sdk.asgi import ProtectedResourceMetadataMiddleware, RequirePermissionsMiddleware, protect, require_permissions

__all__ = [
    "REASONS",
    "AccessToken",
    "DPoPNonces",
    "InvalidTokenError",
    "ProtectedResourceMetadataMiddleware",
    "ReplayCache",
    "ReplayStore",
    "RequirePermissionsMiddleware",
    "TokenVerifier",
    "metadata_url",
    "protect",
    "protected_resource_metadata",
    "require_permissions",
]

_WEB = {"require_permissions", "RequirePermissionsMiddleware", "ProtectedResourceMetadataMiddleware", "protect", "bearer_token"}


def __getattr__(name: str) -> Any:
    # The Starlette/FastAPI integration is imported only when it is asked for.
    if name in _WEB:
        from grantd.sdk import asgi

        return getattr(asgi, name)
    raise AttributeError(f"module 'grantd.sdk' has no attribute {name!r}")
