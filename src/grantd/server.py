"""create_app(settings): the ASGI application, its routes, error rendering and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import grantd
from grantd.api import apps, auth, neucron, wellknown
from grantd.api.envelope import error_response, render_error
from grantd.api.validation import describe_validation_error
from grantd.config import Settings
from grantd.core import signing_keys
from grantd.core.context import Context
from grantd.core.errors import GrantdError

log = logging.getLogger("grantd")

_HTTP_ERRORS = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "invalid_request"}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = Context.from_settings(settings)
        try:
            await signing_keys.ensure_active(ctx)
            await signing_keys.load(ctx)
            app.state.ctx = ctx
            yield
        finally:
            await ctx.close()

    app = FastAPI(
        title="grantd",
        version=grantd.__version__,
        summary="An OAuth 2.0 authorization server speaking the Neucron OAuth API.",
        description="Every Neucron route is served both under `/v1` and at the root. "
        "Success bodies are `{\"data\": {...}, \"status_code\": 200}`; errors are "
        "`{\"error\", \"message\", \"status_code\"}` with that HTTP status.",
        lifespan=lifespan,
    )

    for prefix in ("/v1", ""):
        app.include_router(auth.router, prefix=prefix)
        app.include_router(neucron.router, prefix=prefix)
        app.include_router(apps.router, prefix=prefix)
    app.include_router(wellknown.router)

    @app.exception_handler(GrantdError)
    async def _grantd_error(request: Request, exc: GrantdError):  # type: ignore[no-untyped-def]
        return render_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        message = describe_validation_error(exc.errors())
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type:
            message += " Send it as Content-Type: application/json."
        return error_response("invalid_request", message, 400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):  # type: ignore[no-untyped-def]
        error = _HTTP_ERRORS.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "server_error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return error_response(error, message, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response("server_error", "The server failed to handle the request.", 500)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


class BodySizeLimit:
    """Refuses request bodies over the limit with 413 before the application reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._too_large(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"Request body is larger than {self.max_bytes} bytes.")
            return message

        await self.app(scope, limited_receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            "invalid_request", f"Request body is larger than {self.max_bytes} bytes.", 413, {"Connection": "close"}
        )
        await response(scope, receive, send)
