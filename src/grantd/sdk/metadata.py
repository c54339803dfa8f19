"""OAuth 2.0 Protected Resource Metadata (RFC 9728) of a resource server that trusts grantd.

A client that meets the resource (an MCP client, say) without knowing where its tokens come from
reads ``resource_metadata`` from the 401's ``WWW-Authenticate`` challenge (§5.1), fetches that
document, and finds grantd in ``authorization_servers``. The document is served by
:class:`grantd.sdk.asgi.ProtectedResourceMetadataMiddleware`; this module only builds it, and
imports no web framework.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from grantd.sdk.verifier import TokenVerifier

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_url(resource: str) -> str:
    """Where the metadata of ``resource`` is (RFC 9728 §3.1): the well-known path inserted between the
    host and the resource's path, a lone ``/`` path dropped. ``https://mcp.example.com/mcp`` →
    ``https://mcp.example.com/.well-known/oauth-protected-resource/mcp``."""
    parts = urlsplit(resource)
    path = "" if parts.path == "/" else parts.path
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + path, parts.query, ""))


def metadata_path(resource: str) -> str:
    """The path part of :func:`metadata_url`: what a resource server answers at."""
    return urlsplit(metadata_url(resource)).path


def protected_resource_metadata(
    verifier: "TokenVerifier",
    *,
    scopes_supported: Iterable[str] | None = None,
    resource_name: str | None = None,
    resource_documentation: str | None = None,
    resource_policy_uri: str | None = None,
    resource_tos_uri: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The RFC 9728 §2 document of the verifier's ``resource``: grantd (the verifier's issuer) as its
    authorization server, tokens in the ``Authorization`` header, the DPoP algorithms it accepts and
    whether it requires DPoP-bound tokens, and the fields given (``extra`` adds any other §2 field)."""
    if verifier.resource is None:
        raise ValueError("the verifier names no resource: TokenVerifier(issuer, resource='https://…')")
    document: dict[str, Any] = {
        "resource": verifier.resource,
        "authorization_servers": [verifier.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(verifier.dpop_algorithms),
        "dpop_bound_access_tokens_required": verifier.dpop_required,
    }
    if scopes_supported is not None:
        document["scopes_supported"] = list(scopes_supported)
    named = {
        "resource_name": resource_name,
        "resource_documentation": resource_documentation,
        "resource_policy_uri": resource_policy_uri,
        "resource_tos_uri": resource_tos_uri,
    }
    document.update({k: v for k, v in named.items() if v is not None})
    document.update(extra)
    return document
