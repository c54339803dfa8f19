"""create_app(settings): the ASGI application (``Grantd``, made from the route table in
``grantd.routes``) and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

import grantd
from grantd import metrics, routes
from grantd.api import envelope, oauth2
from grantd.api.cors import CorsHeaders
from grantd.api.errors import from_http, render, unavailable
from grantd.api.headers import SecurityHeaders
from grantd.api.hot import HotRoutes
from grantd.api.limits import BodyReadTimeout, BodySizeLimit
from grantd.api.validation import describe_validation_error
from grantd.config import Settings
from grantd.core import key_use, mail, retention, signing_keys
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest
from grantd.store.availability import DatabaseUnavailable
from grantd.telemetry import RequestTelemetry

log = logging.getLogger("grantd")


def create_app(settings: Settings | None = None) -> Grantd:
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
            tasks.append(asyncio.create_task(mail.keep_sending(ctx)))
            tasks.append(asyncio.create_task(key_use.keep_flushed(ctx.key_use, ctx.db)))  # flushes once more when cancelled
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
        settings,
        routes.served(settings),
        title="grantd",
        version=grantd.__version__,
        summary="An OAuth 2.0 authorization server speaking the Neucron OAuth API and standard OAuth 2.0.",
        description="Every Neucron route is served both under `/v1` and at the root. "
        "Neucron success bodies are `{\"data\": {...}, \"status_code\": 200}`; Neucron errors are "
        "`{\"error\", \"message\", \"status_code\"}` with that HTTP status. The standard OAuth 2.0 "
        "endpoints under `/oauth2/` take form-encoded bodies and answer RFC 6749 JSON.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyReadTimeout, timeout=settings.request_body_timeout)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, dialect_of=app.dialects.of_path)
    return app


class Grantd(FastAPI):
    """FastAPI, made from the route table (``grantd.routes``).

    - Its routes are the declared ones, each under its whole path; an error is answered in the
      dialect of the route it happened on (``grantd.api.errors.Dialects``).
    - The routes declared hot are answered ahead of FastAPI, by ``grantd.api.hot.HotRoutes``:
      FastAPI's own per-request work (its check for OpenTelemetry providers, environment
      lookups, costs a request's worth of the token endpoint's budget) is skipped for them.
    - Telemetry, then the security headers, then CORS (``grantd.api.cors``) wrap the whole
      middleware stack, outside even the 500 handler: every response (a 413, a crash's 500) is
      timed, counted, logged and given its X-Request-ID and headers. The hot routes do all three
      themselves.
    - The OpenAPI document is FastAPI's, as the dialects document themselves.
    """

    def __init__(self, settings: Settings, declared: Sequence[routes.Route], **options: Any) -> None:
        handlers = {
            GrantdError: self._grantd_error,
            DatabaseUnavailable: self._unavailable,
            RequestValidationError: self._validation_error,
            HTTPException: self._http_error,
            Exception: self._unexpected,
        }
        super().__init__(exception_handlers=handlers, **options)
        routes.register(self, declared)
        self.dialects = routes.dialects(declared)
        self.hot_routes = HotRoutes(super().__call__, self.state, settings, routes.hot_routes(declared))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.hot_routes(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        return RequestTelemetry(SecurityHeaders(CorsHeaders(super().build_middleware_stack())))

    def openapi(self) -> dict[str, Any]:
        # No 422 (a malformed request is a 400 in its dialect), and the client authentication of /oauth2/.
        return oauth2.document_client_auth(envelope.without_validation_422(super().openapi()))

    async def _grantd_error(self, request: Request, exc: GrantdError) -> Response:
        return render(self.dialects.of(request.scope), exc)

    async def _unavailable(self, request: Request, exc: DatabaseUnavailable) -> Response:
        return render(self.dialects.of(request.scope), unavailable(exc))

    async def _validation_error(self, request: Request, exc: RequestValidationError) -> Response:
        message = describe_validation_error(exc.errors())
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type:
            message += " Send it as Content-Type: application/json."
        return render(self.dialects.of(request.scope), InvalidRequest(message))

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        return render(self.dialects.of(request.scope), from_http(exc))

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(self.dialects.of(request.scope), GrantdError("The server failed to handle the request."))
