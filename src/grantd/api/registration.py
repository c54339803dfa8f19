"""Dynamic client registration on the wire: RFC 7591's endpoint and RFC 7592's management of a
registration (JSON in, JSON out; errors ``{"error", "error_description"}``), and a developer's
initial access tokens in the Neucron envelope (``/v1/registration-tokens``).

The rules are ``grantd.core.registration``'s.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import client_address, context, current_user, peer_address
from grantd.api.envelope import envelope
from grantd.api.jsonbody import JSONBody
from grantd.api.oauth2 import NO_STORE
from grantd.api.wire import NO_NUL, STRICT, rfc3339
from grantd.core import registration
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidClientMetadata, InvalidToken

ClientId = Annotated[str, Path(max_length=255), NO_NUL]
TokenId = Annotated[str, Path(max_length=64), NO_NUL]
User = Annotated[Principal, Depends(current_user)]
Ctx = Annotated[Context, Depends(context)]
Address = Annotated[str | None, Depends(peer_address)]


def render_error(exc: GrantdError) -> Response:
    """RFC 7591 §3.2.2 and RFC 7592 §2: the error JSON; a bad or missing token is 401 with the
    RFC 6750 challenge."""
    status = exc.status_code if exc.status_code in (400, 401, 403, 404, 405, 408, 413, 429) else 400
    if exc.status_code >= 500:
        status = 500
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"' if isinstance(exc, InvalidToken) else "Bearer"
    if hasattr(exc, "retry_after"):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONBody({"error": exc.error, "error_description": exc.message}, status, headers)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Send the token as Authorization: Bearer <token>.")
    return token.strip()


async def _metadata(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: nesting too deep
        raise InvalidClientMetadata("The request body must be the client metadata as a JSON object.") from None


async def register(request: Request) -> Response:
    """``POST /oauth2/register`` (RFC 7591 §3.1): 201 with the client's information."""
    ctx: Context = request.app.state.ctx
    registration.offered(ctx)
    token = _bearer(request)
    registered = await registration.register(ctx, await _metadata(request), token, address=client_address(request))
    return JSONBody(registered.metadata, 201, NO_STORE)


async def read(client_id: ClientId, request: Request) -> Response:
    """``GET /oauth2/register/{client_id}`` (RFC 7592 §2.1)."""
    return JSONBody(await registration.read(request.app.state.ctx, client_id, _bearer(request)), 200, NO_STORE)


async def update(client_id: ClientId, request: Request) -> Response:
    """``PUT /oauth2/register/{client_id}`` (RFC 7592 §2.2)."""
    ctx: Context = request.app.state.ctx
    token = _bearer(request)
    data = await registration.update(ctx, client_id, token, await _metadata(request), address=client_address(request))
    return JSONBody(data, 200, NO_STORE)


async def delete(client_id: ClientId, request: Request) -> Response:
    """``DELETE /oauth2/register/{client_id}`` (RFC 7592 §2.3): 204."""
    ctx: Context = request.app.state.ctx
    await registration.delete(ctx, client_id, _bearer(request), address=client_address(request))
    return Response(status_code=204, headers=NO_STORE)


# The OpenAPI documentation of the endpoints (grantd.routes declares them with it).
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    "required": ["error", "error_description"],
}
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 7591 §2 client metadata (and grantd's app settings by their names).",
    "properties": {
        "redirect_uris": {"type": "array", "items": {"type": "string"}},
        "client_name": {"type": "string"},
        "token_endpoint_auth_method": {
            "type": "string", "enum": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        },
        "grant_types": {"type": "array", "items": {"type": "string"}},
        "response_types": {"type": "array", "items": {"type": "string", "enum": ["code"]}},
        "scope": {"type": "string"},
        "application_type": {"type": "string", "enum": list(registration.APPLICATION_TYPES)},
        "jwks": {"type": "object"},
        "jwks_uri": {"type": "string"},
        "logo_uri": {"type": "string"},
        "client_uri": {"type": "string"},
        "tos_uri": {"type": "string"},
        "policy_uri": {"type": "string"},
        "post_logout_redirect_uris": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["redirect_uris"],
}
INFORMATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 7591 §3.2.1: the metadata, and the client's credentials.",
    "properties": {
        "client_id": {"type": "string"},
        "client_secret": {"type": "string", "description": "Shown once, at registration (confidential clients)."},
        "client_id_issued_at": {"type": "integer"},
        "client_secret_expires_at": {"type": "integer", "description": "0: never."},
        "registration_access_token": {"type": "string", "description": "Shown once, at registration."},
        "registration_client_uri": {"type": "string"},
        **METADATA_SCHEMA["properties"],
    },
    "required": ["client_id", "redirect_uris", "registration_client_uri"],
}
BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": METADATA_SCHEMA}}}}
ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "invalid_client_metadata or invalid_redirect_uri (RFC 7591 §3.2.2)",
        "content": {"application/json": {"schema": _ERROR}},
    },
    401: {
        "description": "invalid_token: a missing or bad initial access token or registration access token",
        "content": {"application/json": {"schema": _ERROR}},
    },
    404: {"description": "not_found: registration is off", "content": {"application/json": {"schema": _ERROR}}},
    429: {
        "description": "rate_limited: too many open registrations from this address; see Retry-After",
        "content": {"application/json": {"schema": _ERROR}},
    },
}


# ---------------------------------------------------------------- a developer's initial access tokens


class InitialAccessTokenCreate(BaseModel):
    """``{}`` for a token valid until revoked."""

    model_config = STRICT
    expires_in: int | None = Field(
        None, ge=60, le=365 * 86400, description="Seconds until it expires; absent: until revoked."
    )


class InitialAccessTokenData(BaseModel):
    token_id: str
    created_at: str
    expires_at: str | None
    revoked: bool
    revoked_at: str | None


class CreatedInitialAccessTokenData(InitialAccessTokenData):
    initial_access_token: str = Field(
        description="The Bearer token a client registers with at /oauth2/register (RFC 7591 §3). Shown only here, once."
    )


class InitialAccessTokenList(BaseModel):
    tokens: list[InitialAccessTokenData]


def token_data(token: registration.InitialAccessToken) -> dict[str, Any]:
    return {
        "token_id": token.token_id,
        "created_at": rfc3339(token.created_at),
        "expires_at": rfc3339(token.expires_at),
        "revoked": token.revoked_at is not None,
        "revoked_at": rfc3339(token.revoked_at),
    }


async def create_token(body: InitialAccessTokenCreate, user: User, ctx: Ctx, address: Address) -> Response:
    created = await registration.create_initial_access_token(ctx, user.user_id, expires_in=body.expires_in, address=address)
    return envelope({**token_data(created.token), "initial_access_token": created.initial_access_token}, no_store=True)


async def list_tokens(user: User, ctx: Ctx) -> Response:
    tokens = await registration.list_initial_access_tokens(ctx, user.user_id)
    return envelope({"tokens": [token_data(token) for token in tokens]})


async def revoke_token(token_id: TokenId, user: User, ctx: Ctx, address: Address) -> Response:
    return envelope(token_data(await registration.revoke_initial_access_token(ctx, user.user_id, token_id, address=address)))
