"""Per-request telemetry: the request id, one log line, the metrics.

``RequestTelemetry`` is a pure ASGI middleware: it wraps ``send`` only to read the status and
add ``X-Request-ID``; nothing is buffered, parsed or copied. The hot routes (``grantd.api.hot``)
are answered outside it and call ``request_id`` and ``record`` themselves.

A request's ``route`` label is the path its route is declared with (``/v1/apps/{app_id}``): the
route table (``grantd.routes``) registers every route under its whole path. What a route's
success issues, for ``grantd_tokens_issued_total``, is declared there too (``issues``): a grant
type, or ``NOTED_GRANT`` for the OAuth 2.0 token endpoint, which has parsed its form anyway and
tells which grant was asked for (``note_grant_type``). So is whether a route is a ``probe``, whose
requests are logged at debug level, so that a load balancer's health checks do not drown the log.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantd import logs, metrics
from grantd.core import grants

REQUEST_ID_HEADER = b"x-request-id"
# An incoming X-Request-ID is kept when it looks like an id (a load balancer's, a client's);
# anything else is replaced, so that logs cannot be forged or flooded through it.
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")
GRANT_TYPES = frozenset(grants.GRANT_TYPES)  # the metrics' grant label: the token endpoint's grant types
# A route's ``issues``: the token it issued is of the grant type its handler noted (note_grant_type).
NOTED_GRANT = "noted"

access_log = logging.getLogger(logs.ACCESS_LOGGER)
# The labelled children of the request metrics, so that a request costs no label validation.
# Routes are templates and methods and statuses few: these stay small.
_request_counters: dict[tuple[str, str, int], Any] = {}
_latency_histograms: dict[tuple[str, str], Any] = {}
_tokens_issued = {grant_type: metrics.tokens_issued.labels(grant_type) for grant_type in (*GRANT_TYPES, "other")}


def new_request_id() -> str:
    return os.urandom(16).hex()


class RequestTelemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                incoming = value
                break
        rid = request_id(incoming)
        reset = logs.request_id.set(rid)
        header = (REQUEST_ID_HEADER, rid.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        path = scope["path"]
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(reset)
            route = scope.get("route")  # the route matched, if any (for a 405, the route with that path)
            label = getattr(route, "path", None) or metrics.UNMATCHED
            issues, probe = getattr(route, "issues", None), getattr(route, "probe", False)
            record(scope, path, label, status, time.perf_counter() - start, rid, issues, probe)


def request_id(incoming: bytes | None) -> str:
    """The request's id: the caller's ``X-Request-ID`` when it looks like an id, else a new one."""
    if incoming is not None and _SANE_REQUEST_ID.match(incoming):
        return incoming.decode("ascii")
    return new_request_id()


def record(
    scope: Scope,
    path: str,
    route: str,
    status: int,
    duration: float,
    rid: str,
    issues: str | None = None,
    probe: bool = False,
) -> None:
    """Count, time and log one answered request. ``route`` is its route's path template;
    ``issues`` and ``probe`` are what the route table declares of the route."""
    method = scope["method"]
    counter = _request_counters.get((method, route, status))
    if counter is None:
        counter = _request_counters[(method, route, status)] = metrics.requests.labels(method, route, str(status))
    counter.inc()
    histogram = _latency_histograms.get((method, route))
    if histogram is None:
        histogram = _latency_histograms[(method, route)] = metrics.latency.labels(method, route)
    histogram.observe(duration)
    if status == 200:
        if issues is not None:
            _tokens_issued[scope["state"].get(_GRANT_TYPE_KEY, "other") if issues == NOTED_GRANT else issues].inc()
    elif status == 429:
        metrics.rate_limited.labels(route).inc()

    level = logging.DEBUG if probe else logging.WARNING if status >= 500 else logging.INFO
    if access_log.isEnabledFor(level):
        client = scope.get("client")
        # makeRecord + handle: logger.log() would walk the stack to find the caller, for nothing.
        entry = access_log.makeRecord(
            logs.ACCESS_LOGGER,
            level,
            __file__,
            0,
            "request",
            (),
            None,
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "request_id": rid,
                "client": client[0] if client else None,
            },
        )
        access_log.handle(entry)


_GRANT_TYPE_KEY = "grantd_grant_type"


def note_grant_type(state: dict[str, Any], grant_type: str | None) -> None:
    """Tell the request's telemetry which grant a token request asked for (``state`` is the ASGI
    scope's ``state``, Starlette's ``request.state``), for ``grantd_tokens_issued_total``."""
    state[_GRANT_TYPE_KEY] = grant_type if grant_type in GRANT_TYPES else "other"
