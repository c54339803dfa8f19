"""Operations endpoints: liveness, readiness and Prometheus metrics.

- ``GET /healthz``: the process is up and answering; touches nothing else. For liveness probes.
- ``GET /readyz``: the database answers, its schema is the newest migration, it takes a write
  (``core.health.writable``), and a signing key is active; 200 when all hold, 503 otherwise. For
  load balancers and readiness probes.
- ``GET /metrics``: Prometheus text format; routed only when ``GRANTD_METRICS_ENABLED`` is true.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from grantd import metrics
from grantd.api.jsonbody import JSONBody
from grantd.core.health import CHECKS, readiness

NO_STORE = {"Cache-Control": "no-store"}


def _json(body: dict[str, Any], status: int) -> Response:
    return JSONBody(body, status, NO_STORE)


STATUS_SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
READY_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {
            "type": "object",
            "properties": {name: {"type": "string"} for name in CHECKS},
        },
    },
    "required": ["status", "checks"],
}


async def healthz() -> Response:
    return _json({"status": "ok"}, 200)


async def readyz(request: Request) -> Response:
    checks = await readiness(getattr(request.app.state, "ctx", None))
    ready = all(value == "ok" for value in checks.values())
    return _json({"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(), 200, headers=NO_STORE, media_type=metrics.CONTENT_TYPE)
