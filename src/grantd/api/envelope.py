"""The Neucron wire shapes: the success envelope and the error body."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from grantd.api.jsonbody import JSONBody
from grantd.core.errors import GrantdError

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """Every Neucron success body: exactly these two keys."""

    # status_code has a default, yet every response carries it: required in the response schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    data: T
    status_code: int = Field(200, examples=[200])


class ErrorBody(BaseModel):
    """Every Neucron error body; the HTTP status equals ``status_code``."""

    error: str = Field(examples=["invalid_request"], description="An OAuth 2.0 style error code.")
    message: str = Field(examples=["token.app_id is required."], description="A human sentence; never internals.")
    status_code: int = Field(examples=[400])


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def envelope(data: Any, *, no_store: bool = False) -> Response:
    return JSONBody({"data": data, "status_code": 200}, 200, NO_STORE if no_store else None)


def error_response(error: str, message: str, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return JSONBody({"error": error, "message": message, "status_code": status_code}, status_code, headers)


def render_error(exc: GrantdError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    return error_response(exc.error, exc.message, exc.status_code, headers)


_DESCRIPTIONS = {
    400: "Malformed request (`invalid_request`), unknown or disallowed permission (`invalid_scope`), "
    "unregistered redirect URI (`invalid_redirect_uri`), or consent needed (`consent_required`).",
    401: "Missing or bad bearer token (`invalid_token`), wrong app or key credentials (`invalid_client`), "
    "or an unusable authorization code (`invalid_grant`).",
    403: "Signed in, but not allowed to do this (`forbidden`).",
    404: "No such resource among yours (`not_found`).",
    409: "Already exists (`conflict`).",
    413: "Request body too large (`invalid_request`).",
    429: "Too many attempts (`rate_limited`); see `Retry-After`.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the errors a route can return."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in (*statuses, 413)}


def without_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 ``HTTPValidationError`` for every route with parameters or a body, but
    grantd answers a malformed request with 400 ``invalid_request`` in the error body: say so instead.
    Edits the OpenAPI document in place (idempotent) and returns it."""
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "Malformed request (`invalid_request`): a missing or mistyped field or parameter.",
                    "content": error_body,
                }
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema
