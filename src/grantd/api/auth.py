"""Neucron user accounts: sign-up, log-in, log-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import client_address, context, current_user
from grantd.api.envelope import envelope
from grantd.api.wire import STRICT, rfc3339
from grantd.core import accounts
from grantd.core.context import Context


class Credentials(BaseModel):
    model_config = STRICT
    email: str = Field(max_length=320, examples=["ada@example.com"])
    password: str = Field(max_length=1024, examples=["correct horse battery staple"])


class UserTokenData(BaseModel):
    user_id: str
    access_token: str = Field(description="The user token: send it as `Authorization: Bearer <token>`.")
    expires_at: str = Field(examples=["2024-07-09T22:02:52Z"], description="RFC 3339 UTC; equals the token's `exp`.")


class MessageData(BaseModel):
    message: str


def _token(token: accounts.UserToken) -> Response:
    return envelope(
        {"user_id": token.user_id, "access_token": token.access_token, "expires_at": rfc3339(token.expires_at)},
        no_store=True,
    )


async def signup(body: Credentials, request: Request, ctx: Annotated[Context, Depends(context)]) -> Response:
    return _token(await accounts.sign_up(ctx, body.email, body.password, address=client_address(request)))


async def login(body: Credentials, request: Request, ctx: Annotated[Context, Depends(context)]) -> Response:
    return _token(await accounts.log_in(ctx, body.email, body.password, address=client_address(request)))


async def logout(
    user: Annotated[accounts.Principal, Depends(current_user)], ctx: Annotated[Context, Depends(context)]
) -> Response:
    await accounts.log_out(ctx, user)
    return envelope({"message": "Logged out."})
