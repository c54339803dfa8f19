"""How an error reaches the wire: in the error dialect of the route it happened on.

A dialect is the function that renders a ``GrantdError`` in its shape: ``envelope.render_error``
(the Neucron error body), ``oauth2.render_error`` (RFC 6749 §5.2 JSON) and
``grantd.web.pages.render_error`` (an HTML page). The route table (``grantd.routes``) names each
route's; ``Dialects`` answers which one a request gets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from grantd import metrics
from grantd.core.errors import GrantdError, InvalidRequest, NotFound, PayloadTooLarge, TemporarilyUnavailable
from grantd.store.availability import DatabaseUnavailable

Dialect = Callable[[GrantdError], Response]


class MethodNotAllowed(GrantdError):
    error, status_code = "method_not_allowed", 405


def render(dialect: Dialect, exc: GrantdError) -> Response:
    """``exc`` in the shape of ``dialect``, counted in ``grantd_errors_total``."""
    metrics.errors.labels(exc.error).inc()
    return dialect(exc)


class Dialects:
    """The error dialect of any request, from the declared routes' ``(path, dialect)``.

    - A request a route matched (and a 405: the route with that path) has that route's dialect:
      the route FastAPI matched carries it (``scope["route"].dialect``).
    - A path before routing (a body refused by its declared size) or that no route matches has
      the dialect of the declared route with that path; failing that, the dialect most declared
      paths speak in the deepest folder of the path that holds any. So ``/oauth2/nope`` is
      answered in RFC 6749 JSON (the consent page, ``/oauth2/authorize``, is outvoted there),
      ``/console/nope`` with a page, and ``/nope`` and ``/signin/nope`` (no page has a folder of
      its own there) in the Neucron body.
    """

    def __init__(self, declared: Iterable[tuple[str, Dialect]]) -> None:
        dialects: dict[str, Dialect] = {}
        for path, dialect in declared:
            if dialects.setdefault(path, dialect) is not dialect:
                raise ValueError(f"{path}: every route with one path answers errors in one dialect")
        self._paths = [(_segments(path), dialect) for path, dialect in dialects.items()]

    def of(self, scope: Scope) -> Dialect:
        dialect: Dialect | None = getattr(scope.get("route"), "dialect", None)
        return dialect if dialect is not None else self.of_path(scope["path"])

    def of_path(self, path: str) -> Dialect:
        parts = _segments(path)
        deepest, votes = -1, Counter[Dialect]()
        for segments, dialect in self._paths:
            shared = _shared(segments, parts)
            if shared == len(segments) == len(parts):
                return dialect
            # The folder both lie in: their shared segments, short of either's last one.
            depth = min(shared, len(segments) - 1, len(parts) - 1)
            if depth > deepest:
                deepest, votes = depth, Counter()
            if depth == deepest:
                votes[dialect] += 1
        return votes.most_common(1)[0][0]


def _segments(path: str) -> list[str]:
    return path.split("/")[1:]


def _shared(template: list[str], parts: list[str]) -> int:
    """How many leading segments of a path match a route's (a ``{parameter}`` matches any but an empty one)."""
    count = 0
    for expected, part in zip(template, parts):
        if expected != part and not (expected.startswith("{") and part):
            break
        count += 1
    return count


def unavailable(exc: DatabaseUnavailable) -> TemporarilyUnavailable:
    """The one answer to a database that does not answer, whatever the route: 503
    ``temporarily_unavailable`` with ``Retry-After``, in the route's dialect. Never a traceback: the
    store logged the outage once (``store.availability``)."""
    return TemporarilyUnavailable(
        f"The service is temporarily unavailable. Try again in {exc.retry_after} seconds.", exc.retry_after
    )


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
