"""CORS on the wire: the headers of the routes the route table marks (``grantd.core.cors`` is the
rule), for FastAPI's routes (``CorsHeaders``) and the hot path (``grantd.api.hot``) alike.

- A preflight (``OPTIONS`` of a marked path, declared in the route table by ``preflight``): 204
  with ``Access-Control-Allow-Methods`` (the path's methods), ``-Allow-Headers`` (``Authorization``,
  ``Content-Type``, ``DPoP``) and ``-Max-Age``, allowing ``*`` on an ``OPEN`` path and the asking
  origin on a ``CLIENT`` one (which client is asking, only the request itself says: its answer is
  judged then), unless it is no http(s) origin any redirect URI could have (``null``).
- An answer of an ``OPEN`` route: ``Access-Control-Allow-Origin: *``.
- An answer of a ``CLIENT`` route: ``Access-Control-Allow-Origin: <Origin>`` and ``Vary: Origin``
  only when the handler judged the origin allowed for the request's client and said so
  (``allow``), before any error it may then raise: an allowed client reads its own errors.

Both kinds expose ``DPoP-Nonce`` and ``WWW-Authenticate``. No answer ever carries
``Access-Control-Allow-Credentials``: no marked route reads a cookie.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantd.core import cors
from grantd.core.cors import CLIENT, OPEN

# The request state key (``scope["state"]``) of the origin a CLIENT route's handler allowed.
ALLOWED_ORIGIN = "grantd.cors.allowed_origin"

_ALLOW_ORIGIN = b"access-control-allow-origin"
_EXPOSE = (b"access-control-expose-headers", ", ".join(cors.EXPOSE_HEADERS).encode("ascii"))
_VARY = (b"vary", b"Origin")
_OPEN = [(_ALLOW_ORIGIN, b"*"), _EXPOSE]
_NONE: list[tuple[bytes, bytes]] = []


def allow(scope: Scope, origin: str) -> None:
    """The handler of a CLIENT route judged ``origin`` allowed for the request's client."""
    scope.setdefault("state", {})[ALLOWED_ORIGIN] = origin


def headers(kind: str | None, scope: Scope) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an answer of a route of ``kind`` (None: an unmarked route, none)."""
    if kind == OPEN:
        return _OPEN
    if kind == CLIENT:
        state = scope.get("state")
        origin = state.get(ALLOWED_ORIGIN) if state else None
        if origin is not None:
            return [(_ALLOW_ORIGIN, origin.encode("latin-1")), _VARY, _EXPOSE]
    return _NONE


class CorsHeaders:
    """Adds ``headers`` to every answer of a FastAPI route, by the kind its declaration carries
    (``grantd.routes.DeclaredRoute.cors``, found in ``scope["route"]`` once routed: a 405 of a marked
    path too). The hot routes add theirs themselves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = headers(getattr(scope.get("route"), "cors", None), scope)
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


@functools.cache
def preflight(kind: str, methods: Sequence[str]) -> Callable[[Request], Awaitable[Response]]:
    """The handler of ``OPTIONS`` on a path of ``kind`` whose routes take ``methods`` (one per
    kind and methods, so that the route table declares the same handler each time)."""
    allow_methods = ", ".join(methods)
    common = {
        "Allow": ", ".join((*methods, "OPTIONS")),
        "Access-Control-Allow-Methods": allow_methods,
        "Access-Control-Allow-Headers": ", ".join(cors.ALLOW_HEADERS),
        "Access-Control-Max-Age": str(cors.MAX_AGE),
    }

    async def answer(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is None or "access-control-request-method" not in request.headers:
            return Response(status_code=204, headers={"Allow": common["Allow"]})  # not a CORS preflight
        if kind == OPEN:
            return Response(status_code=204, headers={**common, "Access-Control-Allow-Origin": "*"})
        if cors.origin_of(origin) != origin:  # "null" (a sandbox, a file), or not an origin: never allowed
            return Response(status_code=204, headers={"Allow": common["Allow"]})
        return Response(status_code=204, headers={**common, "Access-Control-Allow-Origin": origin, "Vary": "Origin"})

    answer.__name__ = answer.__qualname__ = f"cors_preflight_{kind}_{'_'.join(methods).lower()}"
    return answer
