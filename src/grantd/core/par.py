"""Pushed authorization requests (RFC 9126).

A client POSTs its authorization request to ``/oauth2/par``, authenticated as at the token
endpoint (a public client by its ``client_id``); the request is checked by the rules of the
authorization endpoint (``authorization.resolve_target`` + ``validate_request``) and stored,
bound to the client, under a ``request_uri`` (``urn:ietf:params:oauth:request_uri:<random>``, only
the keyed hash of the random part is kept) that lives ``GRANTD_PUSHED_AUTHORIZATION_REQUEST_TTL``
seconds.

At ``/oauth2/authorize`` the ``client_id`` + ``request_uri`` stand for the stored parameters (the
rest of the query is ignored, §4). The browser may go through the sign-in and consent pages, which
carry the ``request_uri`` (never the expanded parameters) and bring it back: the request is
*opened* on its first arrival (within its lifetime; from then on it lives ``BROWSER_TIME``
seconds more, the user's time to sign in and consent) and *spent* when the answer (a code or an
error) is sent back to the client. One UPDATE spends it, so it answers once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grantd.core import authorization, openid, resources
from grantd.core.client_auth import ClientAuthentication
from grantd.core.context import Context
from grantd.core.errors import InvalidDPoPProof, InvalidRedirectUri, InvalidRequest, InvalidRequestUri
from grantd.crypto.secrets import new_secret
from grantd.store import pushed_requests as store

PREFIX = "urn:ietf:params:oauth:request_uri:"
# Once a browser has brought the request_uri to the authorization endpoint: the time it has to
# sign in and consent before the request is answered.
BROWSER_TIME = 600
# What a pushed request must not carry: client authentication, and a request_uri (RFC 9126 §2.1).
_NOT_STORED = ("client_secret", "client_assertion", "client_assertion_type")
_UNUSABLE = "The request_uri is unknown, expired, already used, or not this client's (RFC 9126)."


@dataclass(frozen=True, slots=True)
class Pushed:
    request_uri: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Opened:
    """A pushed request brought to the authorization endpoint: its parameters, when it was pushed,
    and what the pages carry instead of them (``carried``: client_id and request_uri)."""

    request_hash: str
    params: dict[str, str]
    created_at: int
    carried: dict[str, str]


async def push(ctx: Context, auth: ClientAuthentication, form: dict[str, str], *, dpop_jkt: str | None = None) -> Pushed:
    """RFC 9126 §2: authenticate the client, check the request as the authorization endpoint would,
    and store it. Errors are the token endpoint's (RFC 6749 §5.2), never redirects. ``dpop_jkt``:
    the key of the request's DPoP proof, which binds the code as the parameter does (RFC 9449
    §10.1); both sent must name the same key."""
    client = await auth.authenticate(ctx)
    if "request_uri" in form:
        raise InvalidRequest("request_uri must not be sent in a pushed authorization request (RFC 9126 §2.1).")
    if "request" in form:
        raise InvalidRequest("Request objects (the request parameter) are not supported.")
    params = {name: value for name, value in form.items() if name not in _NOT_STORED and value != ""}
    params["client_id"] = client.app_id
    if dpop_jkt is not None:
        if params.get("dpop_jkt", dpop_jkt) != dpop_jkt:
            raise InvalidDPoPProof("dpop_jkt is not the thumbprint of the DPoP proof's key (RFC 9449 §10.1).")
        params["dpop_jkt"] = dpop_jkt
    try:
        target = await authorization.resolve_target(ctx, client.app_id, params.get("redirect_uri"))
    except InvalidRedirectUri as exc:
        raise InvalidRequest(exc.message) from None
    if "redirect_uri" not in params and openid.is_openid(params.get("scope", "").split(" ")):
        raise InvalidRequest("redirect_uri is required in an OpenID Connect request (scope openid).")
    if "redirect_uri" not in params and target.openid.fapi2:  # FAPI 2.0 Security Profile §5.3.2.2
        raise InvalidRequest("redirect_uri is required in a pushed authorization request (FAPI 2.0).")
    standard = validate(ctx, target, params)
    await resources.admit(ctx, standard.resources, standard.permissions)
    if params.get("id_token_hint") is not None:
        openid.hinted_subject(ctx, params["id_token_hint"], target.app_id)
    secret = new_secret()
    now = ctx.now()
    ttl = ctx.settings.pushed_authorization_request_ttl
    async with ctx.db.write() as tx:
        await store.insert_request(
            tx, request_hash=ctx.hasher.hash(secret), app_id=client.app_id, parameters=json.dumps(params),
            now=now, expires_at=now + ttl,
        )
    return Pushed(PREFIX + secret, ttl)


def validate(ctx: Context, target: authorization.Target, params: dict[str, str]) -> authorization.StandardRequest:
    """The authorization endpoint's rules for ``params`` (a request, pushed or not)."""
    return authorization.validate_request(
        ctx,
        target,
        response_type=params.get("response_type"),
        scope=params.get("scope"),
        state=params.get("state"),
        code_challenge=params.get("code_challenge"),
        code_challenge_method=params.get("code_challenge_method"),
        nonce=params.get("nonce"),
        prompt=params.get("prompt"),
        max_age=params.get("max_age"),
        response_mode=params.get("response_mode"),
        request_object=params.get("request"),
        request_uri=params.get("request_uri"),
        dpop_jkt=params.get("dpop_jkt"),
        resource=params.get(resources.PARAMETER),
    )


def _hash_of(ctx: Context, request_uri: str) -> str | None:
    if not request_uri.startswith(PREFIX) or "\x00" in request_uri:
        return None
    secret = request_uri[len(PREFIX):]
    return ctx.hasher.hash(secret) if 0 < len(secret) <= 128 else None


async def open_request(ctx: Context, client_id: str | None, request_uri: str) -> Opened:
    """The pushed request ``request_uri`` names, if it is ``client_id``'s, unspent and unexpired;
    InvalidRequestUri otherwise. Its first arrival gives the browser ``BROWSER_TIME`` to finish."""
    request_hash = _hash_of(ctx, request_uri)
    if request_hash is None or not client_id or "\x00" in client_id:
        raise InvalidRequestUri(_UNUSABLE)
    now = ctx.now()
    async with ctx.db.read() as conn:
        row = await store.live_request(conn, request_hash, client_id, now)
    if row is None:
        raise InvalidRequestUri(_UNUSABLE)
    if row.opened_at is None:
        async with ctx.db.write() as tx:
            await store.open_request(tx, request_hash, now, now + BROWSER_TIME)
    params = json.loads(row.parameters)
    return Opened(request_hash, params, row.created_at, {"client_id": client_id, "request_uri": request_uri})


async def spend(ctx: Context, opened: Opened) -> None:
    """Spend the request as its answer goes back to the client; InvalidRequestUri when it was
    spent already (answered in another tab) or expired meanwhile."""
    async with ctx.db.write() as tx:
        spent = await store.spend_request(tx, opened.request_hash, ctx.now())
    if not spent:
        raise InvalidRequestUri(_UNUSABLE)
