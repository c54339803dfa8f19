"""The standard OAuth 2.0 dialect: form-encoded token, revocation, introspection and pushed
authorization request endpoints, and the authorization server metadata (RFC 6749, 7009, 7662,
8414, 9126, 9207).

Errors are RFC 6749 §5.2 JSON: ``{"error", "error_description"}``; ``invalid_client`` is 401
with ``WWW-Authenticate``.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote_plus

from fastapi import Request
from starlette.responses import Response

from grantd import telemetry
from grantd.api import cors as cors_wire
from grantd.api.deps import client_address
from grantd.api.jsonbody import JSONBody
from grantd.core import (
    authorization, client_auth, client_metadata, cors, device, dpop, endpoints, grants, introspection, jwks, openid,
    par, ratelimit, registration, resources, revocation,
)
from grantd.core.clients import ID_TOKEN_ALGORITHMS, SUBJECT_TYPES
from grantd.core.access_token import IssuedToken
from grantd.core.context import Context
from grantd.crypto.secrets import key_id_of_secret
from grantd.core.errors import GrantdError, InvalidClient
from grantd.forms import FORM, read_form

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def document_client_auth(schema: dict[str, Any]) -> dict[str, Any]:
    """Define the ``ClientSecretBasic`` security scheme the /oauth2/ routes name (edits in place, idempotent)."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["ClientSecretBasic"] = {
        "type": "http",
        "scheme": "basic",
        "description": "client_secret_basic (RFC 6749 §2.3.1): the app_id as user name, a key secret as password. "
        "client_secret_post (client_id and client_secret in the form) works too, and private_key_jwt "
        "(RFC 7523: client_assertion_type and client_assertion in the form) for an app registered for it.",
    }
    return schema


def error_body(error: str, description: str, status_code: int, headers: dict[str, str] | None = None) -> Response:
    """RFC 6749 §5.2."""
    all_headers = dict(NO_STORE)
    if status_code == 401:
        all_headers["WWW-Authenticate"] = 'Basic realm="grantd", charset="UTF-8"'
    all_headers.update(headers or {})
    return JSONBody({"error": error, "error_description": description}, status_code, all_headers)


def render_error(exc: GrantdError) -> Response:
    # No such route (404) or method (405) keeps its status: a 400 would hide a missing endpoint. So
    # do the transport's limits (408, 413) and the rate limit (429), which are not OAuth errors.
    status = 401 if isinstance(exc, InvalidClient) else exc.status_code if exc.status_code in (404, 405, 408, 413, 429) else 400
    if exc.status_code >= 500:
        status = 503 if exc.status_code == 503 else 500  # temporarily_unavailable keeps its 503 and Retry-After
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    if hasattr(exc, "dpop_nonce"):  # RFC 9449 §8: use_dpop_nonce brings the nonce to use
        headers = {"DPoP-Nonce": exc.dpop_nonce}
    return error_body(exc.error, exc.message, status, headers)


def _json(data: dict[str, Any]) -> Response:
    return JSONBody(data, 200, NO_STORE)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Only HTTP Basic client authentication is accepted in the Authorization header.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII characters in the header
        raise InvalidClient("The Basic credentials are malformed.") from None
    client_id, sep, client_secret = decoded.partition(":")
    client_id, client_secret = unquote_plus(client_id), unquote_plus(client_secret)
    if not sep or "\x00" in client_id or "\x00" in client_secret:  # no id or secret holds U+0000, as in parse_form
        raise InvalidClient("The Basic credentials are malformed.")
    return client_id, client_secret


class _ClientRequest:
    """``async with _ClientRequest(ctx, authorization, form, address) as auth:`` how the calling
    client authenticates (``core.client_auth.from_credentials``: client_secret_basic,
    client_secret_post, or a public client's bare client_id; one method only), to be proven inside
    the block, inside the rate limit every endpoint that checks a client secret shares: a failure
    to authenticate, or the grant's own ``invalid_grant`` in the block, counts against the key
    named and the address. A class rather than ``@asynccontextmanager``: every token request goes
    through it.

    ``await request.cross_origin(origin, scope)``, before the block and before anything is spent
    (a DPoP proof's jti included): the CORS rule for a request with an ``Origin`` (``core.cors``)."""

    __slots__ = ("_ctx", "_auth", "_malformed", "_limit")

    def __init__(self, ctx: Context, authorization: str | None, form: dict[str, str], address: str | None) -> None:
        self._ctx = ctx
        self._auth: client_auth.ClientAuthentication | None = None
        try:
            basic = _basic_credentials(authorization)
            self._malformed: GrantdError | None = None
        except InvalidClient as exc:
            basic, self._malformed = None, exc
        client_id, secret = basic if basic is not None else (form.get("client_id"), form.get("client_secret"))
        if self._malformed is None:
            try:
                self._auth = client_auth.from_credentials(
                    basic, form.get("client_id"), form.get("client_secret"),
                    form.get("client_assertion_type"), form.get("client_assertion"),
                )
            except GrantdError as exc:  # raised on entering, inside the rate limit, as before any other
                self._malformed = exc
        # Whom the request claims to be: the key named by the secret, else the client_id, else the
        # client assertion's sub (unverified: failed assertions count in that client's bucket).
        claimed = (key_id_of_secret(secret) if secret else None) or client_id
        if claimed is None and form.get("client_assertion"):
            claimed = client_auth.PrivateKeyJwt(None, form["client_assertion"]).claimed()
        self._limit = ratelimit.token_endpoint(ctx, claimed, address)

    async def cross_origin(self, origin: str | None, scope: dict[str, Any]) -> None:
        """For a request with an ``Origin`` (a browser's): that origin may read the answer, for the
        client the request names (``grantd.api.cors.allow``), or ``OriginNotAllowed``. Nothing for
        credentials too malformed to name a client: the block refuses them, unreadable."""
        if origin is not None and self._auth is not None and await cors.check_client(self._ctx, origin, self._auth):
            cors_wire.allow(scope, origin)

    async def __aenter__(self) -> client_auth.ClientAuthentication:
        await self._limit.__aenter__()
        try:
            auth, malformed = self._auth, self._malformed
            if auth is None:
                raise malformed if malformed is not None else InvalidClient("Client authentication is required.")
            return auth
        except BaseException as exc:
            # An error while entering is counted as the block's own would be (it may become a 429).
            await self._limit.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        return await self._limit.__aexit__(exc_type, exc, tb)


def _issued(issued: IssuedToken) -> Response:
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    if issued.id_token is not None:
        body["id_token"] = issued.id_token
    return _json(body)


# The OpenAPI documentation of the form endpoints, which the route table (grantd.routes) declares them with.
_STRING: dict[str, Any] = {"type": "string"}
_CLIENT_FIELDS = {
    "client_id": _STRING,
    "client_secret": _STRING,
    "client_assertion_type": {
        "type": "string",
        # "": a parameter sent without a value counts as omitted (RFC 6749 §3.1).
        "enum": [client_auth.JWT_BEARER],
        "description": "private_key_jwt (RFC 7523 §2.2), with client_assertion.",
    },
    "client_assertion": {
        "type": "string",
        "description": "private_key_jwt: a JWT signed by a key of the app's jwks or jwks_uri; iss and sub the "
        "client_id, aud the issuer, a new jti, exp at most 5 minutes ahead.",
    },
}
TOKEN_REQUEST = {
    "grant_type": {"type": "string", "enum": list(grants.GRANT_TYPES)},
    "code": _STRING,
    "redirect_uri": _STRING,
    "code_verifier": _STRING,
    "refresh_token": _STRING,
    "device_code": {"type": "string", "description": "The device authorization grant (RFC 8628 §3.4)."},
    "scope": _STRING,
    "resource": {
        "type": "string",
        "description": "RFC 8707: the resource the access token is for, its aud: an absolute https URI without a "
        "fragment; one of the grant's resources if the authorization request named any.",
    },
    **_CLIENT_FIELDS,
}
TOKEN_PARAMETER = {
    "token": _STRING,
    "token_type_hint": {"type": "string", "description": "access_token or refresh_token; a hint only, any value is accepted."},
    **_CLIENT_FIELDS,
}


_DPOP_HEADER = {
    "in": "header",
    "name": "DPoP",
    "required": False,
    "schema": {"type": "string"},
    "description": "A DPoP proof (RFC 9449 §4): what the endpoint issues is bound to its key. "
    "400 invalid_dpop_proof when it fails a check, use_dpop_nonce (with DPoP-Nonce) when the server's nonce is required.",
}


def form_doc(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI for a form-encoded body, authenticated by Basic or by client_id/client_secret in the form;
    the token and PAR endpoints also take a DPoP proof. An optional parameter sent empty is as if
    omitted (RFC 6749 §3.1): its enum, if any, admits ""."""
    documented = {
        name: {**spec, "enum": [*spec["enum"], ""]} if "enum" in spec and name not in required else spec
        for name, spec in properties.items()
    }
    schema = {"type": "object", "properties": documented, "required": required}
    doc: dict[str, Any] = {
        "requestBody": {"required": True, "content": {FORM: {"schema": schema}}},
        "security": [{"ClientSecretBasic": []}, {}],
    }
    if properties is TOKEN_REQUEST or properties is PAR_REQUEST:
        doc["parameters"] = [_DPOP_HEADER]
    return doc


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    "required": ["error", "error_description"],
}
ERRORS_DOC = {
    400: {"description": "RFC 6749 §5.2 error", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
    401: {"description": "invalid_client", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
    429: {
        "description": "rate_limited: too many failed requests of this client or address; see Retry-After",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
}
TOKEN_SCHEMA = {
    "type": "object",
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "description": "Bearer, or DPoP for a token bound to the DPoP proof's key (RFC 9449)"},
        "expires_in": {"type": "integer"},
        "scope": {"type": "string"},
        "refresh_token": {"type": "string"},
        "id_token": {"type": "string", "description": "OpenID Connect: for a grant with the openid scope"},
    },
    "required": ["access_token", "token_type", "expires_in", "scope"],
}
PAR_REQUEST = {
    "response_type": {"type": "string", "enum": ["code"]},
    "redirect_uri": _STRING,
    "scope": _STRING,
    "state": _STRING,
    "code_challenge": _STRING,
    "code_challenge_method": {"type": "string", "enum": ["S256"]},
    "nonce": _STRING,
    "prompt": _STRING,
    "max_age": _STRING,
    "response_mode": _STRING,
    "login_hint": _STRING,
    "id_token_hint": _STRING,
    "dpop_jkt": {"type": "string", "description": "RFC 9449 §10: bind the code to this DPoP key's JWK thumbprint."},
    "resource": {
        "type": "array",
        "items": _STRING,
        "description": "RFC 8707: the resources the tokens may be for (the parameter repeated), each an absolute "
        "https URI without a fragment.",
    },
    **_CLIENT_FIELDS,
}
PAR_SCHEMA = {
    "type": "object",
    "properties": {
        "request_uri": {"type": "string", "description": "urn:ietf:params:oauth:request_uri:…, single-use"},
        "expires_in": {"type": "integer"},
    },
    "required": ["request_uri", "expires_in"],
}
DEVICE_AUTHORIZATION_REQUEST = {"scope": _STRING, **_CLIENT_FIELDS}
DEVICE_AUTHORIZATION_SCHEMA = {
    "type": "object",
    "properties": {
        "device_code": {"type": "string", "description": "The device's: it polls /oauth2/token with it"},
        "user_code": {"type": "string", "description": "The person's: 8 letters shown as WDJB-MJHT"},
        "verification_uri": {"type": "string", "description": "Where the person types the user code"},
        "verification_uri_complete": {"type": "string", "description": "The same, with the user code filled in"},
        "expires_in": {"type": "integer"},
        "interval": {"type": "integer", "description": "Seconds to wait between two polls"},
    },
    "required": ["device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in", "interval"],
}
INTROSPECTION_SCHEMA = {"type": "object", "properties": {"active": {"type": "boolean"}}, "required": ["active"]}


async def token(request: Request) -> Response:
    form = await read_form(request, resources.REPEATABLE)  # a repeated resource: invalid_target, not invalid_request
    return await issue_token(
        request.app.state.ctx, request.headers.get("authorization"), form, client_address(request), request.scope,
        request.headers.getlist("dpop") or None, request.headers.get("origin"),
    )


async def _proof(ctx: Context, values: list[str] | None, endpoint: str) -> dpop.Proof | None:
    """The request's DPoP proof (RFC 9449 §4.3) for a ``POST`` to ``endpoint`` (its metadata field,
    ``core.endpoints``), checked; None without one."""
    proof = dpop.one_proof(values) if values else None
    if proof is None:
        return None
    return await dpop.check(ctx, proof, method="POST", uri=ctx.settings.issuer + endpoints.PATHS[endpoint])


async def issue_token(
    ctx: Context, authorization: str | None, form: dict[str, str], address: str | None, scope: dict[str, Any],
    dpop_headers: list[str] | None = None, origin: str | None = None,
) -> Response:
    """The token endpoint (RFC 6749 §3.2) past the wire: this route and the hot path (grantd.api.hot) call it.
    ``dpop_headers``: the request's ``DPoP`` headers, if any (RFC 9449 §5): what it issues is then
    bound to the proof's key. ``origin``: the request's ``Origin``, if any (CORS, ``core.cors``)."""
    telemetry.note_grant_type(scope.setdefault("state", {}), form.get("grant_type"))
    request = _ClientRequest(ctx, authorization, form, address)
    if origin is not None:
        await request.cross_origin(origin, scope)
    if dpop_headers is None:
        async with request as auth:
            issued = await grants.token_request(ctx, auth, form, address)
        return _issued(issued)
    proof = await _proof(ctx, dpop_headers, "token_endpoint")
    async with request as auth:
        issued = await grants.token_request(ctx, dpop.Bound(auth, proof.jkt) if proof else auth, form, address)
    response = _issued(issued)
    response.headers.update(dpop.nonce_headers(ctx))
    return response


async def revoke(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await read_form(request)
    # A client secret can be guessed here as at the token endpoint: failures count in the same buckets.
    client = _ClientRequest(ctx, request.headers.get("authorization"), form, client_address(request))
    await client.cross_origin(request.headers.get("origin"), request.scope)
    async with client as auth:
        await revocation.revoke(ctx, auth, form.get("token"))
    return Response(b"", 200, headers=NO_STORE)


async def introspect(request: Request) -> Response:
    form = await read_form(request)
    return await introspect_token(
        request.app.state.ctx, request.headers.get("authorization"), form, client_address(request)
    )


async def introspect_token(ctx: Context, authorization: str | None, form: dict[str, str], address: str | None) -> Response:
    """RFC 7662 past the wire: this route and the hot path (grantd.api.hot) call it."""
    async with _ClientRequest(ctx, authorization, form, address) as auth:
        return _json(await introspection.introspect(ctx, auth, form.get("token")))


async def pushed_authorization_request(request: Request) -> Response:
    """``POST /oauth2/par`` (RFC 9126 §2): 201 with the request_uri, or RFC 6749 §5.2 errors."""
    ctx: Context = request.app.state.ctx
    form = await read_form(request, resources.REPEATABLE)  # RFC 8707: resource may repeat
    client = _ClientRequest(ctx, request.headers.get("authorization"), form, client_address(request))
    await client.cross_origin(request.headers.get("origin"), request.scope)
    # RFC 9449 §10.1: a DPoP proof sent here binds the code to its key, as dpop_jkt does.
    proof = await _proof(ctx, request.headers.getlist("dpop"), "pushed_authorization_request_endpoint")
    async with client as auth:
        pushed = await par.push(ctx, auth, form, dpop_jkt=proof.jkt if proof else None)
    headers = {**NO_STORE, **dpop.nonce_headers(ctx)} if proof else NO_STORE
    return JSONBody({"request_uri": pushed.request_uri, "expires_in": pushed.expires_in}, 201, headers)


async def device_authorization(request: Request) -> Response:
    """``POST /oauth2/device_authorization`` (RFC 8628 §3.1): the device's codes, or RFC 6749 §5.2 errors."""
    ctx: Context = request.app.state.ctx
    form = await read_form(request)
    client = _ClientRequest(ctx, request.headers.get("authorization"), form, client_address(request))
    await client.cross_origin(request.headers.get("origin"), request.scope)
    async with client as auth:
        issued = await device.authorize_device(ctx, auth, form)
    body = {
        "device_code": issued.device_code,
        "user_code": issued.user_code,
        "verification_uri": issued.verification_uri,
        "verification_uri_complete": issued.verification_uri_complete,
        "expires_in": issued.expires_in,
        "interval": issued.interval,
    }
    return JSONBody(body, 200, NO_STORE)


def discovery_document(ctx: Context) -> dict[str, Any]:
    """The one metadata document of the server: RFC 8414's (``/.well-known/oauth-authorization-server``)
    and OpenID Connect Discovery 1.0's (``/.well-known/openid-configuration``), every REQUIRED and
    RECOMMENDED field of both."""
    issuer = ctx.settings.issuer
    return {
        "issuer": issuer,
        **endpoints.urls(issuer),
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "scopes_supported": [*openid.SCOPES, *(name for name in ctx.catalog.descriptions if name not in openid.SCOPES)],
        "response_types_supported": ["code"],
        "response_modes_supported": list(authorization.RESPONSE_MODES),
        "grant_types_supported": list(grants.GRANT_TYPES),
        "subject_types_supported": list(SUBJECT_TYPES),
        "id_token_signing_alg_values_supported": list(ID_TOKEN_ALGORITHMS),
        "claims_supported": list(openid.CLAIMS_SUPPORTED),
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "prompt_values_supported": list(authorization.PROMPTS),
        "display_values_supported": ["page"],
        "ui_locales_supported": ["en"],
        "token_endpoint_auth_methods_supported": list(client_auth.TOKEN_ENDPOINT_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(jwks.ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(client_auth.TOKEN_ENDPOINT_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(jwks.ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": list(client_auth.CONFIDENTIAL_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": list(jwks.ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "require_pushed_authorization_requests": ctx.settings.require_pushed_authorization_requests,
        "dpop_signing_alg_values_supported": list(dpop.ALGORITHMS),
        # draft-ietf-oauth-client-id-metadata-document: an https URL as client_id names its metadata
        "client_id_metadata_document_supported": client_metadata.supported(ctx),
        # RFC 7591: only when GRANTD_DYNAMIC_REGISTRATION is not off
        **({"registration_endpoint": endpoint} if (endpoint := registration.endpoint(ctx)) else {}),
    }


async def metadata(request: Request) -> Response:
    """``GET /.well-known/oauth-authorization-server`` (RFC 8414)."""
    return JSONBody(discovery_document(request.app.state.ctx), 200, {"Cache-Control": "public, max-age=300"})
