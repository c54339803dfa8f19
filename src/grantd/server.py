"""create_app(settings): the ASGI application, its routes, error rendering and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import grantd
from grantd.api import apps, audit, auth, envelope, grants, hot, neucron, oauth2, wellknown
from grantd import metrics, web
from grantd.web import console
from grantd.api import ops
from grantd.api.errors import from_http, render
from grantd.api.validation import describe_validation_error
from grantd.api.headers import SecurityHeaders
from grantd.api.limits import BodyReadTimeout, BodySizeLimit
from grantd.config import Settings
from grantd.core import retention, signing_keys
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest
from grantd.telemetry import RequestTelemetry

log = logging.getLogger("grantd")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = Context.from_settings(settings)
        try:
            await signing_keys.ensure_active(ctx)
            await signing_keys.load(ctx)
            app.state.ctx = ctx
            metrics.pools.watch(ctx.db)
            refresher = asyncio.create_task(signing_keys.keep_fresh(ctx))
            tasks = [refresher]
            if settings.prune_interval:
                tasks.append(asyncio.create_task(retention.keep_pruned(ctx)))
            # What start-up made (modules, tables, the app) lives as long as the process: move it
            # out of the garbage collector's way, so collections during requests stay short.
            gc.freeze()
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                # Let them finish before the engine is disposed, so that they hold no connection.
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            metrics.pools.forget(ctx.db)
            await ctx.close()

    app = Grantd(
        title="grantd",
        version=grantd.__version__,
        summary="An OAuth 2.0 authorization server speaking the Neucron OAuth API and standard OAuth 2.0.",
        description="Every Neucron route is served both under `/v1` and at the root. "
        "Neucron success bodies are `{\"data\": {...}, \"status_code\": 200}`; Neucron errors are "
        "`{\"error\", \"message\", \"status_code\"}` with that HTTP status. The standard OAuth 2.0 "
        "endpoints under `/oauth2/` take form-encoded bodies and answer RFC 6749 JSON.",
        lifespan=lifespan,
    )

    for prefix in ("/v1", ""):
        app.include_router(auth.router, prefix=prefix)
        app.include_router(neucron.router, prefix=prefix)
        app.include_router(apps.router, prefix=prefix)
        app.include_router(grants.router, prefix=prefix)
        app.include_router(audit.router, prefix=prefix)
    app.include_router(oauth2.router)
    app.include_router(web.router)
    app.include_router(console.router)  # the developer console
    app.include_router(wellknown.router)
    app.include_router(ops.router)
    if settings.metrics_enabled:
        app.add_route("/metrics", ops.metrics_endpoint, methods=["GET"], include_in_schema=False)

    @app.exception_handler(GrantdError)
    async def _grantd_error(request: Request, exc: GrantdError) -> Response:
        return render(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        message = describe_validation_error(exc.errors())
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type:
            message += " Send it as Content-Type: application/json."
        return render(request.url.path, InvalidRequest(message))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return render(request.url.path, from_http(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request.url.path, GrantdError("The server failed to handle the request."))

    generate_openapi = app.openapi
    app.openapi = lambda: oauth2.document_client_auth(  # type: ignore[method-assign]
        envelope.without_validation_422(generate_openapi())
    )

    app.add_middleware(BodyReadTimeout, timeout=settings.request_body_timeout)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outside even the 500 handler: telemetry times, counts and logs every request, and gives every
    # response (a 413, a crash's 500) its X-Request-ID; then the security headers. The hot routes
    # (grantd.api.hot) are answered in front of all of it, and do both themselves.
    inner_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: hot.HotRoutes(  # type: ignore[method-assign]
        RequestTelemetry(SecurityHeaders(inner_stack())), app, settings
    )
    return app


class Grantd(FastAPI):
    """FastAPI, with the hot routes handed straight to the middleware stack (``grantd.api.hot``):
    FastAPI's own per-request check for OpenTelemetry providers (environment lookups, a
    request's worth of the token endpoint's budget) is skipped for them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self.middleware_stack
        if stack is not None and scope["type"] == "http" and (scope["method"], scope["path"]) in hot.ROUTES:
            scope["app"] = self
            await stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

