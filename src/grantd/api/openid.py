"""OpenID Connect's JSON endpoints: UserInfo (Core §5.3) and discovery (Discovery 1.0 §4).

UserInfo takes the access token as a bearer token (RFC 6750): in the ``Authorization`` header
(GET or POST), or as ``access_token`` in a POST's form body; never in the query, where it
would be logged. Errors are RFC 6750 §3: a ``WWW-Authenticate: Bearer`` challenge with the
RFC 6749 §5.2 JSON body. A DPoP-bound token (RFC 9449 §7) comes as ``Authorization: DPoP
<token>`` with a ``DPoP`` proof carrying its ``ath``; its errors are ``WWW-Authenticate: DPoP``
challenges (§7.1), and a bound token sent as a bearer token is ``invalid_token``.

A browser's request (with ``Origin``) may read UserInfo's answer from the origin of a redirect URI
of the client the token was issued to (``grantd.core.cors``); from another origin it is refused,
``invalid_request``, before the DPoP proof is checked (and its ``jti`` spent).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from grantd.api import cors as cors_wire
from grantd.api.jsonbody import JSONBody
from grantd.api.oauth2 import NO_STORE, discovery_document
from grantd.core import cors, dpop, endpoints, id_tokens
from grantd.core.errors import GrantdError, InsufficientScope, InvalidDPoPProof, InvalidRequest, InvalidToken, UseDPoPNonce
from grantd.forms import FORM, parse_form

_REALM = 'Bearer realm="grantd"'
# RFC 9449 §7.1: the DPoP challenge names the proof algorithms accepted.
_DPOP = f'{dpop.SCHEME} algs="{" ".join(dpop.ALGORITHMS)}"'


def _challenge(
    status_code: int, exc: GrantdError | None, scope: str | None = None, *, scheme: str = "Bearer",
    headers: dict[str, str] | None = None,
) -> Response:
    """RFC 6750 §3, RFC 9449 §7.1: without a token, the bare challenges of both schemes; otherwise
    the error in the challenge of the scheme the request used (``scheme``) and in the body."""
    if exc is None:
        return Response(b"", 401, headers={**NO_STORE, "WWW-Authenticate": f"{_REALM}, {_DPOP}"})
    # RFC 6750 §3: error_description holds only %x20-21 / %x23-5B / %x5D-7E (a message may quote
    # what the client sent, in any script: the body keeps it whole).
    description = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in exc.message)
    error = f'error="{exc.error}", error_description="{description}"'
    challenge = f"{_DPOP}, {error}" if scheme == dpop.SCHEME else f"{_REALM}, {error}"
    if scope:
        challenge += f', scope="{scope}"'
    if scheme != dpop.SCHEME and status_code == 401:
        challenge += f", {_DPOP}"
    body = {"error": exc.error, "error_description": exc.message}
    return JSONBody(body, status_code, {**NO_STORE, "WWW-Authenticate": challenge, **(headers or {})})


async def _bearer(request: Request) -> str | None:
    """The access token of the request: one way only (RFC 6750 §2)."""
    header = request.headers.get("authorization")
    in_header = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidRequest("The Authorization header must be: Bearer <access token>, or DPoP <access token>.")
        in_header = value.strip()
    if "access_token" in request.query_params:
        raise InvalidRequest("Send the access token in the Authorization header or the form body, not in the URL.")
    in_body = None
    if request.method == "POST" and request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM:
        in_body = parse_form(request.headers["content-type"], await request.body()).get("access_token")
    if in_header is not None and in_body is not None:
        raise InvalidRequest("Send the access token one way only: the Authorization header or the form body.")
    return in_header if in_header is not None else in_body


def _dpop_token(request: Request) -> str | None:
    """The access token of ``Authorization: DPoP <token>`` (RFC 9449 §7.1), or None for another scheme."""
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != dpop.SCHEME.lower():
        return None
    if not value.strip():
        raise InvalidRequest("The Authorization header must be: DPoP <access token>.")
    return value.strip()


async def _dpop_userinfo(request: Request, token: str) -> Response:
    """UserInfo for a DPoP-bound token: the proof checked (§4.3, with ``ath``), then the token bound to its key."""
    ctx = request.app.state.ctx
    try:
        proof = dpop.one_proof(request.headers.getlist("dpop"))
        if proof is None:
            raise InvalidDPoPProof("A DPoP proof is required with Authorization: DPoP.")
        checked = await dpop.check(
            ctx, proof, method=request.method, uri=ctx.settings.issuer + endpoints.PATHS["userinfo_endpoint"], access_token=token
        )
        claims = await id_tokens.userinfo(ctx, token, checked.jkt)
    except UseDPoPNonce as exc:  # RFC 9449 §9: a 401 with the nonce to use
        return _challenge(401, exc, scheme=dpop.SCHEME, headers={"DPoP-Nonce": exc.dpop_nonce})
    except (InvalidDPoPProof, InvalidToken) as exc:
        return _challenge(401, exc, scheme=dpop.SCHEME)
    except InsufficientScope as exc:
        return _challenge(403, exc, scope="openid", scheme=dpop.SCHEME)
    return JSONBody(claims, 200, {**NO_STORE, **dpop.nonce_headers(ctx)})


async def _cross_origin(request: Request, token: str) -> None:
    """A browser's request: its origin allowed for the token's client (``cors_wire.allow``), or
    OriginNotAllowed."""
    origin = request.headers.get("origin")
    if origin is not None and await cors.check_access_token(request.app.state.ctx, origin, token):
        cors_wire.allow(request.scope, origin)


async def userinfo(request: Request) -> Response:
    """``GET|POST /oauth2/userinfo``: the claims of the granted scopes about the signed-in user."""
    try:
        bound = _dpop_token(request)
    except InvalidRequest as exc:
        return _challenge(400, exc, scheme=dpop.SCHEME)
    if bound is not None:
        if "access_token" in request.query_params:
            return _challenge(400, InvalidRequest("Send the access token in the Authorization header, not in the URL."))
        try:
            await _cross_origin(request, bound)
        except cors.OriginNotAllowed as exc:
            return _challenge(400, exc, scheme=dpop.SCHEME)
        return await _dpop_userinfo(request, bound)
    try:
        token = await _bearer(request)
    except InvalidRequest as exc:
        return _challenge(400, exc)
    if token is None:
        return _challenge(401, None)
    try:
        await _cross_origin(request, token)
    except cors.OriginNotAllowed as exc:
        return _challenge(400, exc)
    try:
        claims = await id_tokens.userinfo(request.app.state.ctx, token)
    except InvalidToken as exc:
        return _challenge(401, exc)
    except InsufficientScope as exc:
        return _challenge(403, exc, scope="openid")
    return JSONBody(claims, 200, NO_STORE)


async def configuration(request: Request) -> Response:
    """``GET /.well-known/openid-configuration`` (Discovery 1.0 §4): the same document as RFC 8414's."""
    return JSONBody(discovery_document(request.app.state.ctx), 200, {"Cache-Control": "public, max-age=300"})


USERINFO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sub": {"type": "string"}},
    "required": ["sub"],
    "additionalProperties": True,
}
# POST's optional form body (RFC 6750 §2.2): the token, when it is not in the Authorization header.
USERINFO_FORM: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "properties": {"access_token": {"type": "string", "description": "RFC 6750 §2.2"}},
                }
            }
        },
    },
}
