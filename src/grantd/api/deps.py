"""Request-scoped dependencies: the core context and the signed-in user."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from grantd.core import accounts, profile
from grantd.core.context import Context
from grantd.core.errors import InvalidToken

authorization_header = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    scheme_name="UserToken",
    description="A user token from /v1/auth/login or /v1/auth/signup, as `Bearer <token>` or the bare token.",
)


# The dependencies are coroutines: FastAPI runs a plain function dependency in a worker thread,
# a thread hop per dependency on every request.


async def context(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


def client_address(request: Request) -> str | None:
    """The client's address, for rate limits and audit events: the TCP peer's, or, when the peer is
    a proxy named in GRANTD_FORWARDED_ALLOW_IPS, the address it forwarded for (``grantd serve``
    has uvicorn write it into the ASGI scope)."""
    return request.client.host if request.client else None


async def peer_address(request: Request) -> str | None:
    """``client_address`` as a dependency."""
    return client_address(request)


def bearer_token(header: str | None) -> str:
    """The token from ``Authorization: Bearer <t>`` or a bare ``Authorization: <t>``."""
    if not header:
        raise InvalidToken("The Authorization header with a user token is missing.")
    scheme, _, rest = header.strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header.strip()
    if not token or " " in token:
        raise InvalidToken("The Authorization header is malformed.")
    return token


async def current_user(request: Request, authorization: str | None = Security(authorization_header)) -> accounts.Principal:
    return await signed_in(request.app.state.ctx, authorization)


async def signed_in(ctx: Context, authorization: str | None) -> accounts.Principal:
    """The user whose token the Authorization header carries (the hot routes call this too)."""
    return await accounts.authenticate(ctx, bearer_token(authorization))


async def account_holder(request: Request, authorization: str | None = Security(authorization_header)) -> str:
    """The user a user token, or an access token grantd issued to an app for that user, stands for
    (``GET /auth/user/info``: Neucron's v2 SDK calls it with either)."""
    return await profile.holder_of(request.app.state.ctx, bearer_token(authorization))
