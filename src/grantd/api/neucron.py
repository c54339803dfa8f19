"""The Neucron OAuth API: authorize, grant permissions, token, and the permission catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, Field, model_validator
from starlette.responses import Response

from grantd.api.deps import client_address, context, current_user
from grantd.api.envelope import envelope
from grantd.api.wire import STRICT, Text, rfc3339
from grantd.core import authorization, client_auth, ratelimit
from grantd.core.grants import authorization_code
from grantd.core.accounts import Principal
from grantd.core.context import Context


class AuthorizationParams(BaseModel):
    model_config = STRICT
    app_id: Text = Field(min_length=1, max_length=64, examples=["2f0e6c1a-0000-4000-8000-000000000000"])
    app_key: Text = Field(min_length=1, max_length=256, description="The app's secret key.")
    state: Text = Field(min_length=1, max_length=1024, description="Opaque value returned with the code.")
    redirect_uri: Text = Field(min_length=1, max_length=2048, examples=["https://yourapp.com/oauth/callback"])
    permissions: Text = Field(min_length=1, max_length=1024, examples=["read_profile,write_data"])

    def to_request(self) -> authorization.AuthorizationRequest:
        return authorization.AuthorizationRequest(
            self.app_id, self.app_key, self.state, self.redirect_uri, self.permissions
        )


class AuthorizeBody(BaseModel):
    """``{"token": {...}}``; the ``{"permissions": {...}}`` wrapper is accepted too."""

    model_config = STRICT
    token: AuthorizationParams | None = None
    permissions: AuthorizationParams | None = None

    @model_validator(mode="after")
    def _one_wrapper(self) -> "AuthorizeBody":
        if self.token is None and self.permissions is None:
            raise ValueError("token is required: the body is {\"token\": {app_id, app_key, state, redirect_uri, permissions}}")
        return self

    @property
    def params(self) -> AuthorizationParams:
        return self.token or self.permissions  # type: ignore[return-value]


class GrantBody(BaseModel):
    model_config = STRICT
    permissions: AuthorizationParams


class TokenParams(BaseModel):
    model_config = STRICT
    auth_code: Text = Field(min_length=1, max_length=256)
    key_id: Text = Field(min_length=1, max_length=64)
    key_secret: Text = Field(min_length=1, max_length=256)


class TokenBody(BaseModel):
    model_config = STRICT
    token: TokenParams


class CodeData(BaseModel):
    code: str = Field(description="Single-use authorization code.")
    user_id: str
    state: str
    redirect_url: str = Field(description="redirect_uri with code and state added.")
    expires_at: str


class GrantedData(BaseModel):
    message: str = Field(examples=["Permissions granted successfully."])


class TokenData(BaseModel):
    access_token: str = Field(description="ES256 JWT (RFC 9068); verify with /.well-known/jwks.json.")
    token_type: str = Field(examples=["Bearer"])
    expires_in: int
    scope: str = Field(description="Granted permissions, space-separated.")


class Permission(BaseModel):
    name: str
    description: str


class CatalogData(BaseModel):
    permissions: list[Permission]


async def authorize(
    body: AuthorizeBody,
    request: Request,
    user: Annotated[Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
) -> Response:
    return await issue_code(ctx, user, body.params, client_address(request))


async def issue_code(ctx: Context, user: Principal, params: AuthorizationParams, address: str | None) -> Response:
    """The Neucron authorization past the wire: this route and the hot path (grantd.api.hot) call it."""
    issued = await authorization.authorize(ctx, user, params.to_request(), address=address)
    return envelope(
        {
            "code": issued.code,
            "user_id": issued.user_id,
            "state": issued.state,
            "redirect_url": issued.redirect_url,
            "expires_at": rfc3339(issued.expires_at),
        },
        no_store=True,
    )


async def grant_permissions(
    body: GrantBody,
    request: Request,
    user: Annotated[Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
) -> Response:
    await authorization.grant_permissions(ctx, user, body.permissions.to_request(), address=client_address(request))
    return envelope({"message": "Permissions granted successfully."})


async def token(body: TokenBody, request: Request, ctx: Annotated[Context, Depends(context)]) -> Response:
    return await redeem(ctx, body.token, client_address(request))


async def redeem(ctx: Context, params: TokenParams, address: str | None) -> Response:
    """The Neucron token exchange past the wire: this route and the hot path (grantd.api.hot) call it."""
    async with ratelimit.token_endpoint(ctx, params.key_id, address):
        auth = client_auth.KeyPair(params.key_id, params.key_secret)
        issued = await authorization_code.redeem(ctx, auth, params.auth_code, address=address)
    return envelope(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        },
        no_store=True,
    )


async def permission_catalog(ctx: Annotated[Context, Depends(context)]) -> Response:
    items = [{"name": name, "description": text} for name, text in ctx.catalog.descriptions.items()]
    return envelope({"permissions": items})
