"""How an error reaches the wire: each dialect renders a ``GrantdError`` in its own shape."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import Response

from grantd import metrics, web
from grantd.api import envelope, oauth2
from grantd.core.errors import GrantdError, InvalidRequest, NotFound, PayloadTooLarge


class MethodNotAllowed(GrantdError):
    error, status_code = "method_not_allowed", 405


def render(path: str, exc: GrantdError) -> Response:
    """Each dialect renders errors in its own shape: RFC 6749 §5.2 under /oauth2/, the Neucron body elsewhere."""
    metrics.errors.labels(exc.error).inc()
    if web.is_page(path):
        return web.render_error(exc)
    if path.startswith("/oauth2/"):
        return oauth2.render_error(exc)
    return envelope.render_error(exc)


def from_http(exc: HTTPException) -> GrantdError:
    message = exc.detail if isinstance(exc.detail, str) else "The request failed."
    if exc.status_code == 404:
        return NotFound("No such route." if message == "Not Found" else message)
    if exc.status_code == 405:
        return MethodNotAllowed("This route does not accept that method.")
    if exc.status_code == 413:
        return PayloadTooLarge(message)
    error = InvalidRequest(message)
    error.status_code = exc.status_code if 400 <= exc.status_code < 500 else 400
    return error


