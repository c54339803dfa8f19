"""Operations endpoints: liveness, readiness and Prometheus metrics.

- ``GET /healthz``: the process is up and answering; touches nothing else. For liveness probes.
- ``GET /readyz``: the database answers, its schema is the newest migration, and a signing key
  is active; 200 when all hold, 503 otherwise. For load balancers and readiness probes.
- ``GET /metrics``: Prometheus text format; routed only when ``GRANTD_METRICS_ENABLED`` is true.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from grantd import metrics
from grantd.api.jsonbody import JSONBody
from grantd.core import signing_keys
from grantd.core.context import Context
from grantd.store.migrate import is_current

router = APIRouter(tags=["Operations"])
log = logging.getLogger("grantd")

CHECK_TIMEOUT = 3.0
NO_STORE = {"Cache-Control": "no-store"}


def _json(body: dict[str, Any], status: int) -> Response:
    return JSONBody(body, status, NO_STORE)


_STATUS_SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
_READY_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {
            "type": "object",
            "properties": {name: {"type": "string"} for name in ("database", "migrations", "signing_key")},
        },
    },
    "required": ["status", "checks"],
}


@router.get(
    "/healthz",
    summary="Liveness: the process answers (the database is not consulted)",
    responses={200: {"content": {"application/json": {"schema": _STATUS_SCHEMA}}}},
)
async def healthz() -> Response:
    return _json({"status": "ok"}, 200)


async def readiness(ctx: Context | None) -> dict[str, str]:
    """Each check's outcome: "ok", or a word saying what is wrong (never internals)."""
    checks = {"database": "unchecked", "migrations": "unchecked", "signing_key": "unchecked"}
    if ctx is None:
        checks["database"] = "starting"
        return checks
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            current = await is_current(ctx.db)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: not ready
        log.warning("readiness: the database did not answer: %s", exc.__class__.__name__)
        checks["database"] = "unreachable"
        return checks
    checks["database"] = "ok"
    checks["migrations"] = "ok" if current else "not_current"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            keys = await signing_keys.list_keys(ctx)
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness: reading the signing keys failed: %s", exc.__class__.__name__)
        checks["signing_key"] = "unreadable"
        return checks
    now = ctx.now()
    active = any(k.activates_at <= now and (k.retired_at is None or k.retired_at > now) for k in keys)
    checks["signing_key"] = "ok" if active and ctx.signer is not None else "none_active"
    return checks


@router.get(
    "/readyz",
    summary="Readiness: database reachable, migrations current, a signing key active",
    responses={
        200: {"description": "Ready", "content": {"application/json": {"schema": _READY_SCHEMA}}},
        503: {"description": "Not ready; `checks` says which check failed", "content": {"application/json": {"schema": _READY_SCHEMA}}},
    },
)
async def readyz(request: Request) -> Response:
    checks = await readiness(getattr(request.app.state, "ctx", None))
    ready = all(value == "ok" for value in checks.values())
    return _json({"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(), 200, headers=NO_STORE, media_type=metrics.CONTENT_TYPE)
