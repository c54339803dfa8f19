"""Security headers on every response, as a pure ASGI middleware (it sees 413s and 500s too),
and as ``secured`` for the hot routes, which are answered outside it.

Added where a response does not set its own:

- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` everywhere;
- ``Cache-Control: no-store`` (with ``Pragma: no-cache``) unless the route chose its caching
  (the JWKS, the metadata and the stylesheet are public); so every body that may carry a
  token, code or secret — and every error — is never stored by a cache;
- ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`` and
  ``X-Frame-Options: DENY``: JSON needs no scripts, styles or frames. The hosted pages set
  their own stricter-per-page CSP, which is kept. Swagger UI (``/docs``, ``/redoc``) loads its
  scripts from a CDN and runs an inline one, so there (and on ``/openapi.json``, which it
  fetches) only ``frame-ancestors 'none'`` is set.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = b"frame-ancestors 'none'"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

_ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"))


class SecurityHeaders:
    def __init__(self, app: ASGIApp, docs_paths: frozenset[str] = DOCS_PATHS) -> None:
        self.app = app
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope.get("path") in self.docs_paths else API_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": secured(list(message.get("headers", [])), csp)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secured(headers: list[tuple[bytes, bytes]], csp: bytes = API_CSP) -> list[tuple[bytes, bytes]]:
    """A response's headers and the security headers it does not set itself. The hot routes
    (``grantd.api.hot``) call this directly."""
    names = tuple(name for name, _ in headers)
    extra = _extra.get((names, csp))
    if extra is None:
        extra = _missing({name.lower() for name in names}, csp)
        if len(_extra) < _EXTRA_CACHE_SIZE:  # responses come in a few shapes: remember them
            _extra[(names, csp)] = extra
    return headers + extra


def _missing(present: set[bytes], csp: bytes) -> list[tuple[bytes, bytes]]:
    extra = [(name, value) for name, value in _ALWAYS if name not in present]
    if b"content-security-policy" not in present:
        extra.append((b"content-security-policy", csp))
    if b"cache-control" not in present:
        extra.append((b"cache-control", b"no-store"))
        if b"pragma" not in present:
            extra.append((b"pragma", b"no-cache"))
    return extra


# The security headers to add, by the names a response sets (and its CSP).
_extra: dict[tuple[tuple[bytes, ...], bytes], list[tuple[bytes, bytes]]] = {}
_EXTRA_CACHE_SIZE = 256
