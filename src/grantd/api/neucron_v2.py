"""Neucron v2: "Sign in with Neucron" as Neucron's TypeScript SDK 2.x speaks it.

Three GET calls, their parameters in the query, their answers flat JSON objects (no envelope: the
SDK reads the body as it is), their errors the Neucron error body (``envelope.render_error``):

- ``GET /oauth/authorize``: the authorization request of a confidential app, checked as the consent
  page checks it (``authorization.resolve_target``, ``authorization.validate_v2_request``), answered
  with the hosted sign-in (or sign-up) page to send the user to; that page continues to
  ``/oauth2/authorize``, which asks consent and redirects with the code (``authorization.approve``).
- ``GET /oauth/token``: the code's redemption (``authorization_code.redeem``), the app proven by
  ``client_id`` + ``client_secret`` (a key secret) in the query, ``redirect_uri`` and ``state``
  bound to the code, and the grace Neucron's SDK needs: it retries a GET that timed out.
- ``GET /oauth/client-info``: what anyone may see of an app before signing in.

Secrets travel in the query here: grantd logs paths only, never a query string (``grantd.logs``),
and every answer carries ``Referrer-Policy: no-referrer`` (``api/headers``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import Response

from grantd.api.deps import client_address
from grantd.api.envelope import NO_STORE
from grantd.api.jsonbody import JSONBody
from grantd.core import apps, authorization, client_auth, ratelimit
from grantd.core.access_token import IssuedToken
from grantd.core.context import Context
from grantd.core.errors import InvalidClient, InvalidRequest, UnsupportedGrantType
from grantd.core.grants import authorization_code
from grantd.crypto.secrets import key_id_of_secret
from grantd.forms import MAX_PARAMETER_LENGTH, parse_query

# The hosted pages (grantd.web) the authorization continues on: the sign-in or sign-up page by
# ``flow``, then the consent page.
_FLOWS = {"sign-in": "/signin", "sign-up": "/signup"}
_CONSENT = "/oauth2/authorize"


def _ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _required(params: dict[str, str], *names: str) -> None:
    for name in names:
        if name not in params:
            raise InvalidRequest(f"{name} is required.")


# ---------------------------------------------------------------- GET /oauth/authorize


async def authorize(request: Request) -> Response:
    ctx = _ctx(request)
    params = parse_query(request.scope["query_string"])
    _required(params, "client_id", "redirect_uri")
    flow = params.get("flow", "sign-in")
    page = _FLOWS.get(flow)
    if page is None:
        raise InvalidRequest("flow must be sign-in or sign-up.")
    target = await authorization.resolve_target(ctx, params["client_id"], params["redirect_uri"])
    standard = authorization.validate_v2_request(
        ctx, target, response_type=params.get("response_type"), state=params.get("state"), platform=params.get("platform")
    )
    consent = _CONSENT + "?" + urlencode(
        {"response_type": "code", "client_id": target.app_id, "redirect_uri": target.redirect_uri, "state": standard.state}
    )
    if len(consent) > MAX_PARAMETER_LENGTH:  # the sign-in page carries it in its form, as one parameter
        raise InvalidRequest("state is too long: the request would not survive the hosted sign-in page.")
    redirect_url = f"{ctx.settings.issuer}{page}?" + urlencode({"next": consent})
    return JSONBody({"redirect_url": redirect_url}, 200, NO_STORE)


# ---------------------------------------------------------------- GET /oauth/token


async def token(request: Request) -> Response:
    ctx = _ctx(request)
    params = parse_query(request.scope["query_string"])
    address = client_address(request)
    client_id, secret = params.get("client_id"), params.get("client_secret")
    # Counted in the buckets every endpoint that checks a client secret shares: the key the secret
    # names, else the client_id, and the address.
    claimed = (key_id_of_secret(secret) if secret else None) or client_id
    async with ratelimit.token_endpoint(ctx, claimed, address):
        issued = await _redeem(ctx, params, client_id, secret, address)
    body = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    return JSONBody(body, 200, NO_STORE)


async def _redeem(
    ctx: Context, params: dict[str, str], client_id: str | None, secret: str | None, address: str | None
) -> IssuedToken:
    """The redemption the query asks for. The app is proven first (a missing parameter is refused
    after it, as at the other token endpoints), and the code is judged only then."""
    if client_id is None or secret is None:
        raise InvalidClient("client_id and client_secret are required: Neucron v2 serves confidential apps.")
    auth = client_auth.ClientSecret(client_id, secret, client_auth.NEUCRON_V2_QUERY)
    for name in ("grant_type", "code", "redirect_uri", "state"):
        if name not in params:
            await client_auth.missing(ctx, auth, name)
    if params["grant_type"] != authorization_code.GRANT_TYPE:
        await auth.authenticate(ctx)
        raise UnsupportedGrantType("grant_type must be authorization_code.")
    return await authorization_code.redeem(
        ctx, auth, params["code"], redirect_uri=params["redirect_uri"], state=params["state"],
        address=address,
    )


# ---------------------------------------------------------------- GET /oauth/client-info


async def client_info(request: Request) -> Response:
    params = parse_query(request.scope["query_string"])
    _required(params, "client_id")
    app = await authorization.public_client(_ctx(request), params["client_id"])
    return JSONBody(client_info_body(app), 200, NO_STORE)


def client_info_body(app: Any) -> dict[str, Any]:
    """``GET /oauth/client-info``'s answer, from the app's row (``store.apps``): what anyone may see
    of the app before signing in. Neucron's SDK takes every key but ``client_id`` as optional: a
    value the app does not have is left out, never sent as null (``apps.branding`` leaves out the
    branding the app has not set). Keep ``CLIENT_INFO_SCHEMA`` in step."""
    body = {"client_id": app.id, "app_id": app.id, "app_name": app.name}
    return {**{name: value for name, value in body.items() if value is not None}, **apps.branding(app)}


# ---------------------------------------------------------------- the OpenAPI documentation


def _query(name: str, description: str, *, required: bool = True, **schema: Any) -> dict[str, Any]:
    # The length limit is said in words, not as maxLength: with six parameters, the cases a fuzzer
    # makes to break a maxLength build URLs longer than HTTP clients send at all.
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": f"{description} At most {MAX_PARAMETER_LENGTH} characters; each parameter once.",
        "schema": {"type": "string", "minLength": 1, **schema},
    }


_CLIENT_ID = _query("client_id", "The app's id (`app_id`).")
_STRING: dict[str, Any] = {"type": "string"}

AUTHORIZE_QUERY = [
    _query("response_type", "Always `code`.", enum=["code"]),
    _CLIENT_ID,
    _query("redirect_uri", "One of the app's registered redirect URIs, character for character."),
    _query("state", "Opaque; returned with the code, and required again to redeem it."),
    _query("platform", "The app's name as registered."),
    _query("flow", "The hosted page the user lands on first; `sign-in` by default.", required=False, enum=list(_FLOWS)),
]
AUTHORIZE_SCHEMA = {
    "type": "object",
    "properties": {"redirect_url": {**_STRING, "description": "The hosted sign-in or sign-up page to send the user to."}},
    "required": ["redirect_url"],
}
TOKEN_QUERY = [
    _query("grant_type", "Always `authorization_code`.", enum=[authorization_code.GRANT_TYPE]),
    _query("code", "The code from the redirect."),
    _query("redirect_uri", "The redirect_uri of the authorization request."),
    _CLIENT_ID,
    _query("client_secret", "A key secret of the app (`key_secret`)."),
    _query("state", "The state of the authorization request."),
]
TOKEN_SCHEMA = {
    "type": "object",
    "properties": {
        "access_token": {**_STRING, "description": "ES256 JWT (RFC 9068); verify with /.well-known/jwks.json."},
        "token_type": _STRING,
        "expires_in": {"type": "integer"},
        "scope": {**_STRING, "description": "Granted permissions, space-separated."},
    },
    "required": ["access_token", "token_type", "expires_in", "scope"],
}
CLIENT_INFO_QUERY = [_CLIENT_ID]
CLIENT_INFO_SCHEMA = {
    "type": "object",
    "properties": {
        "client_id": _STRING,
        "app_id": _STRING,
        "app_name": _STRING,
        "app_icon": _STRING,
        "app_domain": _STRING,
        "description": _STRING,
        "website_url": _STRING,
        "terms_and_conditions": _STRING,
        "privacy_policy": _STRING,
        "branding": {
            "type": "object",
            "properties": {
                "accent_color": _STRING,
                "theme": {"type": "string", "enum": ["light", "dark"]},
                "logo_url": _STRING,
            },
        },
    },
    "required": ["client_id"],
}
