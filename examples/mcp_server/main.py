"""An MCP server (the official `mcp` Python SDK, streamable HTTP, one tool) that trusts grantd's tokens.

    POST/GET/DELETE /mcp                              the MCP endpoint: needs a grantd access token
                                                      whose aud is MCP_RESOURCE and that carries
                                                      MCP_PERMISSION (bearer or DPoP-bound)
    GET  /.well-known/oauth-protected-resource/mcp    its RFC 9728 metadata: grantd is where tokens come from

A client without a token gets 401 with
``WWW-Authenticate: Bearer realm=…, resource_metadata="…/.well-known/oauth-protected-resource/mcp", DPoP …``,
reads the metadata, finds grantd in ``authorization_servers``, and gets a token there for this
resource. Run it beside grantd (docs/mcp.md):

    GRANTD_ISSUER=http://127.0.0.1:8000 MCP_RESOURCE=http://127.0.0.1:8002/mcp \\
        .venv/bin/uvicorn --app-dir examples/mcp_server main:app --port 8002

Environment:

    GRANTD_ISSUER    grantd's issuer URL (default http://127.0.0.1:8000)
    MCP_RESOURCE     this server's MCP endpoint as clients address it (default http://127.0.0.1:8002/mcp);
                     tokens must carry it as aud: grantd's GRANTD_ACCESS_TOKEN_AUDIENCE, or the
                     resource a client asks grantd for (RFC 8707)
    MCP_PERMISSION   the permission every MCP call needs (default read_profile)
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from grantd.sdk import AccessToken, TokenVerifier, protect


def create_app(verifier: TokenVerifier | None = None, *, permission: str | None = None) -> Any:
    verifier = verifier or TokenVerifier(
        os.environ.get("GRANTD_ISSUER", "http://127.0.0.1:8000"),
        resource=os.environ.get("MCP_RESOURCE", "http://127.0.0.1:8002/mcp"),
    )
    permission = permission or os.environ.get("MCP_PERMISSION", "read_profile")
    mcp = MCPServer("grantd example", instructions="Says whom grantd's access token speaks for.")

    @mcp.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """The grantd app (and user, if any) whose access token this MCP session uses, and its permissions."""
        token: AccessToken = ctx.request_context.request.state.access_token  # type: ignore[union-attr]
        return {"app_id": token.app_id, "user_id": token.user_id, "permissions": list(token.permissions), "dpop_bound": token.jkt is not None}

    endpoint = urlsplit(verifier.resource or "")
    # The MCP SDK's guard against DNS rebinding: only requests addressed to the resource's own host.
    only_here = TransportSecuritySettings(
        allowed_hosts=[endpoint.netloc], allowed_origins=[f"{endpoint.scheme}://{endpoint.netloc}"]
    )
    return protect(
        mcp.streamable_http_app(streamable_http_path=endpoint.path or "/mcp", transport_security=only_here),
        verifier,
        permissions=[permission],
        resource_name="grantd example MCP server",
    )


app = create_app()
