"""Requiring permissions in Starlette and FastAPI apps: a dependency and a middleware.

Both answer as RFC 6750 §3 asks:

- no bearer token at all (no ``Authorization`` header, another scheme, or ``Bearer`` with
  nothing after it): ``401`` with ``WWW-Authenticate: Bearer realm="…"`` and no error code
  (RFC 6750 §3.1: a request that lacks authentication information gets none);
- a token that fails verification: ``401`` with
  ``WWW-Authenticate: Bearer realm="…", error="invalid_token", error_description="…"``;
- a valid token without a required permission: ``403`` with
  ``WWW-Authenticate: Bearer realm="…", error="insufficient_scope", scope="<the permissions required>"``;
- the issuer could not be reached to judge the token: ``503`` with ``Retry-After``.

The realm is the verifier's audience (the API the tokens are meant for) unless ``realm=`` is
given. The JSON body is ``{"error", "error_description"}`` in every case; without a token its
``error`` is ``invalid_token`` too, so that clients reading bodies have one case to handle.

The verified :class:`~grantd.sdk.AccessToken` is returned by the dependency and, with
both, left in ``request.state.access_token``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

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


def _invalid(exc: InvalidTokenError, realm: str) -> _Refused:
    if exc.reason == "unavailable":
        return _Refused(503, "temporarily_unavailable", exc.description, {"Retry-After": "5"})
    if exc.reason == "missing":  # RFC 6750 §3.1: no authentication information, no error code
        return _Refused(401, "invalid_token", exc.description, {"WWW-Authenticate": f"Bearer realm={_quote(realm)}"})
    challenge = f'Bearer realm={_quote(realm)}, error="invalid_token", error_description={_quote(exc.description)}'
    return _Refused(401, "invalid_token", exc.description, {"WWW-Authenticate": challenge})


def _insufficient(realm: str, required: Sequence[str], missing: Sequence[str]) -> _Refused:
    description = f"The access token lacks the permission{'s' if len(missing) > 1 else ''} {', '.join(missing)}."
    challenge = (
        f'Bearer realm={_quote(realm)}, error="insufficient_scope", error_description={_quote(description)}, '
        f"scope={_quote(' '.join(required))}"
    )
    return _Refused(403, "insufficient_scope", description, {"WWW-Authenticate": challenge})


async def _check(
    verifier: TokenVerifier, authorization: str | None, required: Sequence[str], realm: str | None
) -> AccessToken:
    realm = realm or verifier.audience
    try:
        token = await verifier.averify(bearer_token(authorization))
    except InvalidTokenError as exc:
        raise _invalid(exc, realm) from None
    missing = token.missing(required)
    if missing:
        raise _insufficient(realm, required, missing)
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
    ``dependencies=[…]``. Refusals are raised as ``HTTPException`` with the RFC 6750 header and
    ``detail={"error": …, "error_description": …}``.
    """
    required = tuple(permissions)

    async def dependency(request: Request) -> AccessToken:
        try:
            token = await _check(_verifier_of(request, verifier), request.headers.get("authorization"), required, realm)
        except _Refused as refused:
            raise HTTPException(refused.status, detail=refused.body(), headers=refused.headers) from None  # type: ignore[arg-type]
        request.state.access_token = token
        return token

    dependency.__name__ = f"require_permissions({', '.join(required)})"
    return dependency


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
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            token = await _check(self.verifier, authorization, self.permissions, self.realm)
        except _Refused as refused:
            body = json.dumps(refused.body()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in refused.headers.items()]
            await send({"type": "http.response.start", "status": refused.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[STATE_KEY] = token
        await self.app(scope, receive, send)
