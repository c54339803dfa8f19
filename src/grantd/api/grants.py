"""The signed-in user's grants: which apps may act for them, and ending that access."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import context, current_user, peer_address
from grantd.api.envelope import envelope
from grantd.api.wire import NO_NUL, rfc3339
from grantd.core import consents
from grantd.core.accounts import Principal
from grantd.core.context import Context


class GrantData(BaseModel):
    app_id: str
    app_name: str
    permissions: str
    granted_at: str
    updated_at: str
    last_used_at: str | None = Field(
        description="When the app last got tokens for you: its newest refresh token's issue or code's redemption."
    )


class GrantList(BaseModel):
    grants: list[GrantData]


class RevokedData(BaseModel):
    app_id: str
    message: str


async def list_grants(
    user: Annotated[Principal, Depends(current_user)], ctx: Annotated[Context, Depends(context)]
) -> Response:
    items = [
        {
            "app_id": g.app_id,
            "app_name": g.app_name,
            "permissions": g.permissions,
            "granted_at": rfc3339(g.created_at),
            "updated_at": rfc3339(g.updated_at),
            "last_used_at": rfc3339(g.last_used_at),
        }
        for g in await consents.list_grants(ctx, user)
    ]
    return envelope({"grants": items})


async def revoke_grant(
    app_id: Annotated[str, Path(max_length=64), NO_NUL],
    user: Annotated[Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
    address: Annotated[str | None, Depends(peer_address)],
) -> Response:
    await consents.revoke_grant(ctx, user, app_id, address=address)
    return envelope({"app_id": app_id, "message": "Access revoked."})
