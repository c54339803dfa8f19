"""Requiring permissions in Starlette and FastAPI apps: a dependency and a middleware; serving the
resource's metadata (RFC 9728).

Both take the token as ``Authorization: Bearer <token>`` or, DPoP-bound, as
``Authorization: DPoP <token>`` with its ``DPoP`` proof header (RFC 9449 §7), checked by
:meth:`TokenVerifier.averify_request <grantd.sdk.TokenVerifier.averify_request>` against the
request's method and URL. They answer as RFC 6750 §3 and RFC 9449 §7.1 ask:

- no token at all (no ``Authorization`` header, another scheme, or a scheme with nothing after it):
  ``401`` with the challenges and no error code (RFC 6750 §3.1: a request that lacks
  authentication information gets none);
- a token or proof that fails verification: ``401`` whose challenge for the scheme used carries
  ``error="invalid_token"`` (or ``"invalid_dpop_proof"``, or ``"use_dpop_nonce"`` with a new nonce in
  ``DPoP-Nonce``) and ``error_description``;
- a valid token without a required permission: ``403`` with ``error="insufficient_scope"`` and
  ``scope="<the permissions required>"``;
- the issuer could not be reached to judge the token: ``503`` with ``Retry-After``.

The challenges are ``Bearer realm="…"`` and ``DPoP realm="…", algs="<the proof algorithms>"``
(only the second when the verifier has ``dpop_required``); when the verifier names its
``resource``, each also carries ``resource_metadata="<its RFC 9728 document>"`` (§5.1). The realm is
the verifier's audience unless ``realm=`` is given. The JSON body is ``{"error",
"error_description"}`` in every case; without a token its ``error`` is ``invalid_token`` too, so
that clients reading bodies have one case to handle.

The verified :class:`~grantd.sdk.AccessToken` is returned by the dependency and, with
both, left in ``request.state.access_token``.

The request's URL, which a DPoP proof's ``htu`` must match, is the one the ASGI server reports:
behind a TLS-terminating proxy, run uvicorn with ``--proxy-headers`` (and ``--forwarded-allow-ips``)
so that it is the URL the client used.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from grantd.sdk.metadata import WELL_KNOWN, metadata_path, metadata_url, protected_resource_metadata
from grantd.sdk.verifier import AccessToken, InvalidTokenError, TokenVerifier

STATE_KEY = "access_token"


class _Refused(Exception):
    def __init__(self, status: int, error: str, description: str, headers: dict[str, str]) -> None:
        self.status, self.error, self.description, self.headers = status, error, description, headers

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    InvalidTokenError("missing") when the header carries no bearer token (absent, another
    scheme, or nothing after ``Bearer``); InvalidTokenError("malformed") when what follows
    ``Bearer`` is not one token.
    """
    if not authorization:
        raise InvalidTokenError("missing")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidTokenError("missing", "Send the access token as Authorization: Bearer <token>.")
    if " " in token:
        raise InvalidTokenError("malformed", "Send the access token as Authorization: Bearer <token>.")
    return token


def challenges(
    verifier: TokenVerifier, realm: str | None = None, *, scheme: str | None = None, error: dict[str, str] | None = None
) -> str:
    """The ``WWW-Authenticate`` value for a refusal: a challenge per accepted scheme (Bearer unless the
    verifier has ``dpop_required``, and DPoP), ``error`` (its auth-params: ``error``,
    ``error_description``, ``scope``) on the challenge of ``scheme``, the scheme the request used."""
    realm = realm or verifier.audience
    common = {"resource_metadata": metadata_url(verifier.resource)} if verifier.resource else {}
    schemes: list[tuple[str, dict[str, str]]] = []
    if not verifier.dpop_required:
        schemes.append(("Bearer", {}))
    schemes.append(("DPoP", {"algs": " ".join(verifier.dpop_algorithms)}))
    if scheme not in {name for name, _ in schemes}:
        scheme = "DPoP"  # a bearer token sent where only DPoP is accepted: the error goes with what to use
    parts = []
    for name, own in schemes:
        params = {"realm": realm, **(error if error and name == scheme else {}), **own, **common}
        parts.append(f"{name} " + ", ".join(f"{k}={_quote(v)}" for k, v in params.items()))
    return ", ".join(parts)


def _invalid(exc: InvalidTokenError, verifier: TokenVerifier, realm: str | None) -> _Refused:
    if exc.reason == "unavailable":
        return _Refused(503, "temporarily_unavailable", exc.description, {"Retry-After": "5"})
    if exc.reason == "missing":  # RFC 6750 §3.1: no authentication information, no error code
        headers = {"WWW-Authenticate": challenges(verifier, realm)}
    else:
        error = {"error": exc.error, "error_description": exc.description}
        headers = {"WWW-Authenticate": challenges(verifier, realm, scheme=exc.scheme or "Bearer", error=error)}
    if exc.dpop_nonce is not None:
        headers["DPoP-Nonce"] = exc.dpop_nonce
    return _Refused(401, exc.error if exc.reason != "missing" else "invalid_token", exc.description, headers)


def _insufficient(
    verifier: TokenVerifier, realm: str | None, token: AccessToken, required: Sequence[str], missing: Sequence[str]
) -> _Refused:
    description = f"The access token lacks the permission{'s' if len(missing) > 1 else ''} {', '.join(missing)}."
    error = {"error": "insufficient_scope", "error_description": description, "scope": " ".join(required)}
    scheme = "DPoP" if token.jkt is not None else "Bearer"
    return _Refused(403, "insufficient_scope", description, {"WWW-Authenticate": challenges(verifier, realm, scheme=scheme, error=error)})


async def _check(verifier: TokenVerifier, connection: HTTPConnection, required: Sequence[str], realm: str | None) -> AccessToken:
    headers = connection.headers
    try:
        token = await verifier.averify_request(
            connection.scope["method"], str(connection.url), headers.get("authorization"), headers.getlist("dpop")
        )
    except InvalidTokenError as exc:
        raise _invalid(exc, verifier, realm) from None
    missing = token.missing(required)
    if missing:
        raise _insufficient(verifier, realm, token, required, missing)
    return token


def _verifier_of(connection: HTTPConnection, verifier: TokenVerifier | None) -> TokenVerifier:
    if verifier is not None:
        return verifier
    found = getattr(connection.app.state, "token_verifier", None)
    if not isinstance(found, TokenVerifier):
        raise RuntimeError("pass verifier=… or set app.state.token_verifier to a grantd.sdk.TokenVerifier")
    return found


def require_permissions(
    *permissions: str, verifier: TokenVerifier | None = None, realm: str | None = None
) -> Callable[[Request], Awaitable[AccessToken]]:
    """A FastAPI dependency: the request's verified token, carrying every one of ``permissions``.

    ``verifier`` defaults to ``app.state.token_verifier``, ``realm`` to the verifier's audience. Use it as
    ``token: AccessToken = Depends(require_permissions("read_profile"))`` or in a route's
    ``dependencies=[…]``. Refusals are raised as ``HTTPException`` with the RFC 6750 / RFC 9449 headers
    and ``detail={"error": …, "error_description": …}``.
    """
    required = tuple(permissions)

    async def dependency(request: Request) -> AccessToken:
        try:
            token = await _check(_verifier_of(request, verifier), request, required, realm)
        except _Refused as refused:
            raise HTTPException(refused.status, detail=refused.body(), headers=refused.headers) from None  # type: ignore[arg-type]
        request.state.access_token = token
        return token

    dependency.__name__ = f"require_permissions({', '.join(required)})"
    return dependency


async def _send_json(send: Send, status: int, body: Any, headers: dict[str, str], *, head: bool = False) -> None:
    content = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else content})


class RequirePermissionsMiddleware:
    """Pure ASGI middleware: every HTTP request must carry a valid token with ``permissions``.

    ``app.add_middleware(RequirePermissionsMiddleware, verifier=v, permissions=["read_profile"])``,
    or wrap one mounted sub-application. Paths starting with one of ``exclude`` (for example
    ``"/healthz"``) pass without a token. ``realm`` defaults to the verifier's audience.
    Refusals are JSON ``{"error", "error_description"}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        permissions: Iterable[str] = (),
        exclude: Iterable[str] = (),
        realm: str | None = None,
    ) -> None:
        self.app = app
        self.realm = realm
        self.verifier = verifier
        self.permissions = tuple(permissions)
        self.exclude = tuple(exclude)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exclude and scope["path"].startswith(self.exclude)):
            await self.app(scope, receive, send)
            return
        try:
            token = await _check(self.verifier, HTTPConnection(scope), self.permissions, self.realm)
        except _Refused as refused:
            await _send_json(send, refused.status, refused.body(), refused.headers)
            return
        scope.setdefault("state", {})[STATE_KEY] = token
        await self.app(scope, receive, send)


class ProtectedResourceMetadataMiddleware:
    """Pure ASGI middleware serving the RFC 9728 metadata of the verifier's ``resource``.

    ``GET`` (or ``HEAD``) at the resource's metadata path (§3.1: ``/.well-known/oauth-protected-resource``
    followed by the resource's path) answers the document of
    :func:`~grantd.sdk.metadata.protected_resource_metadata`; for a resource with a path, the bare
    ``/.well-known/oauth-protected-resource`` answers it too, for clients that look only there.
    Every other request goes to ``app``. ``fields`` are the document's optional fields
    (``scopes_supported``, ``resource_name``, ``resource_documentation``, …).
    """

    def __init__(self, app: ASGIApp, *, verifier: TokenVerifier, **fields: Any) -> None:
        self.app = app
        self.document = protected_resource_metadata(verifier, **fields)
        self.paths = frozenset({metadata_path(verifier.resource), WELL_KNOWN})  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {"Cache-Control": "max-age=3600", "Access-Control-Allow-Origin": "*"}
        if scope["method"] not in ("GET", "HEAD"):
            await _send_json(send, 405, {"error": "method_not_allowed"}, {**headers, "Allow": "GET, HEAD"})
            return
        await _send_json(send, 200, self.document, headers, head=scope["method"] == "HEAD")


def protect(
    app: ASGIApp,
    verifier: TokenVerifier,
    *,
    permissions: Iterable[str] = (),
    exclude: Iterable[str] = (),
    realm: str | None = None,
    **fields: Any,
) -> ASGIApp:
    """``app`` behind grantd: its RFC 9728 metadata served, every other request needing a valid token
    with ``permissions`` (paths under ``exclude`` pass). ``fields`` go to the metadata document;
    ``scopes_supported`` defaults to ``permissions``. The verifier must name its ``resource``.
    Lifespan events pass through to ``app``."""
    permissions = tuple(permissions)
    fields.setdefault("scopes_supported", permissions)
    guarded = RequirePermissionsMiddleware(app, verifier=verifier, permissions=permissions, exclude=exclude, realm=realm)
    return ProtectedResourceMetadataMiddleware(guarded, verifier=verifier, **fields)
