"""Published metadata: the JSON Web Key Set that resource servers verify tokens with."""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response


class JWKS(BaseModel):
    keys: list[dict[str, str]]


async def jwks(request: Request) -> Response:
    return Response(
        request.app.state.ctx.signing.jwks_document,
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )
