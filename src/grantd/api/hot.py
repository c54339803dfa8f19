"""The hot routes, answered by one raw ASGI layer in front of FastAPI.

An authorization server is judged by its token endpoint, and FastAPI's routing, dependency
injection, request object and middleware stack cost far more than the work of a token
request. So these routes are served here, from the ASGI scope:

- ``POST /oauth/token`` and ``/v1/oauth/token`` (Neucron), ``POST /oauth2/token``,
  ``POST /oauth2/introspect`` and ``GET /.well-known/jwks.json``.

They call the very same functions the FastAPI routes call (``neucron.redeem``,
``oauth2.issue_token``, ``oauth2.introspect_token``) and render errors with the same
``render``; the FastAPI routes stay, for the OpenAPI document and as the fallback. A Neucron
body that is not a well-formed token request goes on to FastAPI, so that every malformed
input gets exactly the answer FastAPI's validation gives it.

The request limits hold here too: the body size cap (413) and the per-chunk body timeout
(408). The request id, the access log and the security headers come from the two layers
outside this one (``RequestTelemetry``, ``SecurityHeaders``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantd.api import neucron, oauth2
from grantd.api.errors import from_http, render
from grantd.config import Settings
from grantd.core.context import Context
from grantd.core.errors import GrantdError, PayloadTooLarge

log = logging.getLogger("grantd")

JSON_MEDIA_TYPE = "application/json"


class _Route:
    """What ``route_template`` (the metrics label) reads of a matched route."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class _Disconnected(Exception):
    """The client went away before its body arrived."""


Handler = Callable[[Context, Scope, bytes, dict[bytes, bytes]], Awaitable[Response | None]]


class HotRoutes:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.state = fastapi_app.state
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.request_body_timeout
        self._jwks: tuple[bytes, Response] | None = None
        self.routes: dict[tuple[str, str], tuple[_Route, Handler, bool]] = {
            ("POST", "/oauth/token"): (_Route("/oauth/token"), self._neucron_token, True),
            ("POST", "/v1/oauth/token"): (_Route("/v1/oauth/token"), self._neucron_token, True),
            ("POST", "/oauth2/token"): (_Route("/oauth2/token"), self._oauth2_token, True),
            ("POST", "/oauth2/introspect"): (_Route("/oauth2/introspect"), self._introspect, True),
            ("GET", "/.well-known/jwks.json"): (_Route("/.well-known/jwks.json"), self._jwks_document, False),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.routes.get((scope["method"], scope["path"]))
        if found is None:
            await self.app(scope, receive, send)
            return
        route, handler, has_body = found
        scope["route"] = route  # the metrics' route label, for errors too
        headers = {name: value for name, value in scope["headers"] if name in _WANTED}
        try:
            body = await self._read_body(headers, receive) if has_body else b""
        except _Disconnected:
            return
        except GrantdError as exc:
            response = render(scope["path"], exc)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        try:
            response = await handler(self.state.ctx, scope, body, headers)
        except GrantdError as exc:
            response = render(scope["path"], exc)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = render(scope["path"], GrantdError("The server failed to handle the request."))
        if response is None:  # not ours after all: FastAPI answers, from the body already read
            del scope["route"]
            await self.app(scope, _replay(body, receive), send)
            return
        await response(scope, receive, send)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise PayloadTooLarge(f"Request body is larger than {self.max_body_bytes} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                raise from_http(
                    HTTPException(408, f"The request body did not arrive within {self.body_timeout:g} seconds.")
                ) from None
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"Request body is larger than {self.max_body_bytes} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _neucron_token(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response | None:
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return None
        try:
            params = neucron.TokenBody.model_validate_json(body).token
        except ValidationError:
            return None
        return await neucron.redeem(ctx, params, _address(scope))

    @staticmethod
    async def _oauth2_token(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response:
        form = oauth2.parse_form(_text(headers.get(b"content-type")) or "", body)
        return await oauth2.issue_token(ctx, _text(headers.get(b"authorization")), form, _address(scope), scope)

    @staticmethod
    async def _introspect(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response:
        form = oauth2.parse_form(_text(headers.get(b"content-type")) or "", body)
        return await oauth2.introspect_token(ctx, _text(headers.get(b"authorization")), form, _address(scope))

    async def _jwks_document(self, ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response:
        # The document changes only when signing keys are reloaded: one response object per version.
        document = ctx.signing.jwks_document
        if self._jwks is None or self._jwks[0] is not document:
            self._jwks = (document, _cached_json(document, "public, max-age=300"))
        return self._jwks[1]


_WANTED = frozenset({b"content-type", b"content-length", b"authorization"})


def _address(scope: Scope) -> str | None:
    """The TCP peer's address, as ``grantd.api.deps.client_address`` (proxy headers are not trusted)."""
    client = scope.get("client")
    return client[0] if client else None


def _text(value: bytes | None) -> str | None:
    # Header values are Latin-1 on the wire (as Starlette decodes them).
    return value.decode("latin-1") if value is not None else None


def _cached_json(body: bytes, cache_control: str) -> Response:
    return Response(body, media_type=JSON_MEDIA_TYPE, headers={"Cache-Control": cache_control})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

