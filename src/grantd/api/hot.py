"""The hot routes, answered by one raw ASGI layer in front of FastAPI.

An authorization server is judged by its token endpoint, and FastAPI's routing, dependency
injection, request object and middleware stack cost far more than the work of a token
request. So the routes the route table (``grantd.routes``) declares ``hot`` are served here,
from the ASGI scope, each by one of the handlers below:

- ``POST /oauth/token`` and ``/v1/oauth/token`` (Neucron: ``neucron_token``), ``POST /oauth2/token``
  (``oauth2_token``), ``POST /oauth2/introspect`` (``introspect``) and ``GET /.well-known/jwks.json``
  (``jwks_document``);
- ``POST /oauth/authorize`` and ``/v1/oauth/authorize`` (Neucron: ``neucron_authorize``), which
  every sign-in to an app goes through.

They call the very same functions the routes' FastAPI handlers call (``neucron.redeem``,
``neucron.issue_code``, ``deps.signed_in``, ``oauth2.issue_token``, ``oauth2.introspect_token``)
and render errors in the dialect the route declares; the FastAPI routes stay, for the OpenAPI
document, for the other methods of these paths (405) and as the fallback. A Neucron body that is
not a well-formed request goes on to FastAPI, so that every malformed input gets exactly the
answer FastAPI's validation gives it.

``HotRoutes`` is the outermost layer: ``grantd.server.Grantd`` is FastAPI behind it. So it does
for these routes what the layers behind it do for every other route, by calling the same
functions: the request id and the metrics and access log (``telemetry.request_id``,
``telemetry.record``), the security headers (``headers.secured``), the CORS headers of the
route's kind (``cors.headers``: a request without ``Origin`` costs it one dict lookup), and the
request limits: the body size cap (413) and the per-chunk body timeout (408). A response is sent from the
``Response`` the shared functions return, without running it as an ASGI app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantd import logs, telemetry
from grantd.api import cors, neucron, oauth2
from grantd.api.deps import signed_in
from grantd.api.errors import Dialect, from_http, render, unavailable
from grantd.api.headers import secured
from grantd.api.limits import declared_too_large, receive_within, timed_out, too_large
from grantd.config import Settings
from grantd.core.context import Context
from grantd.core.errors import GrantdError
from grantd.core.resources import REPEATABLE
from grantd.forms import parse_form
from grantd.store.availability import DatabaseUnavailable

log = logging.getLogger("grantd")

JSON_MEDIA_TYPE = "application/json"

# A hot route's handler: (the server's context, the request's scope, its whole body, the headers
# named in ``_WANTED``) → the response; None hands the request to FastAPI, which answers it from
# the body already read.
Handler = Callable[[Context, Scope, bytes, dict[bytes, bytes]], Awaitable[Response | None]]


class HotRoute(NamedTuple):
    """What serving one declared hot route takes."""

    label: str  # the metrics' route label: the declared path
    handler: Handler
    reads_body: bool
    dialect: Dialect  # of its errors
    issues: str | None  # what its success issues (telemetry.record)
    cors: str | None = None  # its CORS kind (grantd.core.cors), if marked


class _Disconnected(Exception):
    """The client went away before its body arrived."""


_Model = TypeVar("_Model", bound=BaseModel)


class HotRoutes:
    """Serves ``routes`` ((method, path) → its ``HotRoute``) and hands every other request to ``app``."""

    def __init__(
        self, app: ASGIApp, state: State, settings: Settings, routes: Mapping[tuple[str, str], HotRoute]
    ) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.request_body_timeout
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.routes.get((scope["method"], scope["path"]))
        if found is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        route, handler, reads_body, dialect, issues, cors_kind = found
        headers = {name: value for name, value in scope["headers"] if name in _WANTED}
        rid = telemetry.request_id(headers.get(telemetry.REQUEST_ID_HEADER))
        reset = logs.request_id.set(rid)
        try:
            try:
                body = await self._read_body(headers, receive) if reads_body else b""
            except _Disconnected:
                return  # nobody to answer, and nothing to count: the client went away
            except GrantdError as exc:
                response = render(dialect, exc)
                response.headers["Connection"] = "close"
            else:
                try:
                    response = await handler(self.state.ctx, scope, body, headers)
                except GrantdError as exc:
                    response = render(dialect, exc)
                except DatabaseUnavailable as exc:
                    response = render(dialect, unavailable(exc))
                except Exception:
                    log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                    response = render(dialect, GrantdError("The server failed to handle the request."))
                if response is None:  # not ours after all: FastAPI answers, from the body already read
                    logs.request_id.reset(reset)
                    reset = None
                    await self.app(scope, _replay(body, receive), send)
                    return
            status = response.status_code
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        *secured(response.raw_headers),
                        (telemetry.REQUEST_ID_HEADER, rid.encode("ascii")),
                        *cors.headers(cors_kind, scope),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": response.body})
            telemetry.record(scope, scope["path"], route, status, time.perf_counter() - start, rid, issues)
        finally:
            if reset is not None:
                logs.request_id.reset(reset)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        if declared_too_large(headers.get(b"content-length"), self.max_body_bytes):
            raise too_large(self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive_within(self.body_timeout, receive)
            if message is None:
                raise from_http(timed_out(self.body_timeout))
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ---------------------------------------------------------------- the handlers


async def neucron_token(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response | None:
    request = _valid_json(neucron.TokenBody, headers, body)
    if request is None:
        return None
    return await neucron.redeem(ctx, request.token, _address(scope))


async def neucron_authorize(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response | None:
    request = _valid_json(neucron.AuthorizeBody, headers, body)
    if request is None:
        return None
    user = await signed_in(ctx, _text(headers.get(b"authorization")))
    return await neucron.issue_code(ctx, user, request.params, _address(scope))


async def oauth2_token(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response:
    form = parse_form(_text(headers.get(b"content-type")) or "", body, REPEATABLE)
    proofs = None
    if b"dpop" in headers:  # RFC 9449: every DPoP header, to refuse more than one
        proofs = [value.decode("latin-1") for name, value in scope["headers"] if name == b"dpop"]
    return await oauth2.issue_token(
        ctx, _text(headers.get(b"authorization")), form, _address(scope), scope, proofs, _text(headers.get(b"origin"))
    )


async def introspect(ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response:
    form = parse_form(_text(headers.get(b"content-type")) or "", body)
    return await oauth2.introspect_token(ctx, _text(headers.get(b"authorization")), form, _address(scope))


class _JwksDocument:
    """The JSON Web Key Set. The document changes only when signing keys are reloaded: one
    response object per version of it."""

    def __init__(self) -> None:
        self._cached: tuple[bytes, Response] | None = None

    async def __call__(self, ctx: Context, scope: Scope, body: bytes, headers: dict[bytes, bytes]) -> Response:
        document = ctx.signing.jwks_document
        cached = self._cached
        if cached is None or cached[0] is not document:
            cached = self._cached = (document, _cached_json(document, "public, max-age=300"))
        return cached[1]


jwks_document = _JwksDocument()


_WANTED = frozenset(
    {b"content-type", b"content-length", b"authorization", b"dpop", b"origin", telemetry.REQUEST_ID_HEADER}
)


def _valid_json(model: type[_Model], headers: dict[bytes, bytes], body: bytes) -> _Model | None:
    """The body as ``model``, when it is declared JSON and validates; None sends the request on to
    FastAPI, so that it gets exactly the answer FastAPI's validation gives it."""
    if headers.get(b"content-type", b"").split(b";")[0].strip().lower() != b"application/json":
        return None
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return None


def _address(scope: Scope) -> str | None:
    """The client's address, as ``grantd.api.deps.client_address``."""
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

