"""Per-request telemetry: the request id, one log line, the metrics.

``RequestTelemetry`` is a pure ASGI middleware: it wraps ``send`` only to read the status and
add ``X-Request-ID``; nothing is buffered, parsed or copied. The hot routes (``grantd.api.hot``)
are answered outside it and call ``request_id`` and ``record`` themselves. The token endpoint,
which has parsed its form anyway, tells them the grant type of an issued token
(``note_grant_type``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantd import logs, metrics

REQUEST_ID_HEADER = b"x-request-id"
# An incoming X-Request-ID is kept when it looks like an id (a load balancer's, a client's);
# anything else is replaced, so that logs cannot be forged or flooded through it.
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "client_credentials"})
NEUCRON_TOKEN_PATHS = frozenset({"/oauth/token", "/v1/oauth/token"})
OAUTH2_TOKEN_PATH = "/oauth2/token"
# Probes are logged at debug level, so that a load balancer's health checks do not drown the log.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

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
            record(scope, path, route_template(scope), status, time.perf_counter() - start, rid)


def request_id(incoming: bytes | None) -> str:
    """The request's id: the caller's ``X-Request-ID`` when it looks like an id, else a new one."""
    if incoming is not None and _SANE_REQUEST_ID.match(incoming):
        return incoming.decode("ascii")
    return new_request_id()


def record(scope: Scope, path: str, route: str, status: int, duration: float, rid: str) -> None:
    """Count, time and log one answered request (``route`` is its path template)."""
    method = scope["method"]
    counter = _request_counters.get((method, route, status))
    if counter is None:
        counter = _request_counters[(method, route, status)] = metrics.requests.labels(method, route, str(status))
    counter.inc()
    histogram = _latency_histograms.get((method, route))
    if histogram is None:
        histogram = _latency_histograms[(method, route)] = metrics.latency.labels(method, route)
    histogram.observe(duration)
    if status == 200 and method == "POST":
        if path in NEUCRON_TOKEN_PATHS:
            _tokens_issued["authorization_code"].inc()
        elif path == OAUTH2_TOKEN_PATH:
            _tokens_issued[scope["state"].get(_GRANT_TYPE_KEY, "other")].inc()
    elif status == 429:
        metrics.rate_limited.labels(route).inc()

    level = logging.DEBUG if path in PROBE_PATHS else logging.WARNING if status >= 500 else logging.INFO
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


def route_template(scope: Scope) -> str:
    """The matched route's path template ("/v1/apps/{app_id}"), or "unmatched".

    Recent FastAPI versions keep an included router's routes as they were declared: the route
    in the scope then lacks the include prefix ("/v1"), which is recovered from the path.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return metrics.UNMATCHED
    regex = getattr(route, "path_regex", None)
    path = scope["path"]
    if regex is None or regex.match(path):
        return template
    slash = path.find("/", 1)
    while slash != -1:
        if regex.match(path[slash:]):
            return path[:slash] + template
        slash = path.find("/", slash + 1)
    return template


_GRANT_TYPE_KEY = "grantd_grant_type"


def note_grant_type(state: dict[str, Any], grant_type: str | None) -> None:
    """Tell the request's telemetry which grant a token request asked for (``state`` is the ASGI
    scope's ``state``, Starlette's ``request.state``), for ``grantd_tokens_issued_total``."""
    state[_GRANT_TYPE_KEY] = grant_type if grant_type in GRANT_TYPES else "other"
