"""The registered resources (RFC 8707), in the Neucron envelope: ``/v1/resources``.

Every signed-in user may list them (a developer learns which resources the server accepts and
what each accepts); registering and deleting one is the operator's: the users
``GRANTD_RESOURCE_ADMINS`` names (others get 403 ``forbidden``), and ``grantd resources``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import context, current_user, peer_address
from grantd.api.envelope import envelope
from grantd.api.wire import NO_NUL, STRICT, rfc3339
from grantd.core import resources
from grantd.core.accounts import Principal
from grantd.core.context import Context

User = Annotated[Principal, Depends(current_user)]
Ctx = Annotated[Context, Depends(context)]
Address = Annotated[str | None, Depends(peer_address)]


class ResourceCreate(BaseModel):
    model_config = STRICT
    uri: str = Field(
        max_length=resources.MAX_LENGTH, examples=["https://mcp.example.com/mcp"],
        description="The resource's URI, as clients send it as resource (RFC 8707) and as its tokens' aud: "
        "absolute https (http only on localhost, 127.0.0.1, [::1]), no fragment.",
    )
    permissions: str = Field(
        max_length=1024, examples=["read_profile,write_data"],
        description="Comma-separated permissions of the catalog the resource accepts: a token for it carries "
        "only these of what was granted.",
    )
    description: str = Field("", max_length=resources.DESCRIPTION_MAX_LENGTH, examples=["The MCP server"])


class ResourceData(BaseModel):
    uri: str
    permissions: str
    description: str
    created_at: str


class ResourceList(BaseModel):
    resources: list[ResourceData]


class DeletedData(BaseModel):
    uri: str
    deleted: bool


def resource_data(resource: resources.Resource) -> dict[str, str]:
    return {
        "uri": resource.uri,
        "permissions": ",".join(resource.permissions),
        "description": resource.description,
        "created_at": rfc3339(resource.created_at) or "",
    }


async def list_resources(ctx: Ctx, user: User) -> Response:
    return envelope({"resources": [resource_data(r) for r in await resources.list_all(ctx)]})


async def create_resource(body: ResourceCreate, ctx: Ctx, user: User, address: Address) -> Response:
    created = await resources.create(
        ctx, body.uri, body.permissions, body.description, user_id=user.user_id, address=address
    )
    return envelope(resource_data(created))


async def delete_resource(
    ctx: Ctx, user: User, address: Address,
    uri: Annotated[str, Query(max_length=resources.MAX_LENGTH, description="The registered resource's URI."), NO_NUL],
) -> Response:
    await resources.delete(ctx, uri, user_id=user.user_id, address=address)
    return envelope({"uri": uri, "deleted": True})
