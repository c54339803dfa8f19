"""Which browser origins may read grantd's answers (the Fetch Standard's CORS protocol): the rule.

A browser-based client (a single-page app, the MCP Inspector, oauth4webapi in a page) calls the
authorization server with ``fetch()`` from its own origin; the browser shows it an answer only
when the answer names that origin (or ``*``) in ``Access-Control-Allow-Origin``. Each route the
route table (``grantd.routes``) marks is one of two kinds:

- ``OPEN``: public documents and bearer-authenticated calls no cookie authenticates, readable from
  any origin (``*``, never with credentials): the authorization server and OpenID metadata, the
  JWKS, and dynamic client registration (RFC 7591, RFC 7592) when the server offers it.
- ``CLIENT``: the endpoints a client calls as itself (token, revocation, PAR, device
  authorization) and UserInfo. An origin may read the answer when it is the origin of one of the
  client's registered redirect URIs (RFC 6454 §6.1, exactly: scheme, host and port), and the client
  is public (``token_endpoint_auth_method`` none: a browser cannot keep a secret, so a confidential
  client is never answered across origins); at UserInfo, the client the access token was issued
  to, public or not (the token is what the page holds, not a secret of the client).

A request with an ``Origin`` a ``CLIENT`` route does not allow for its client is refused with
``invalid_request`` (``OriginNotAllowed``) before anything is spent: a form-encoded POST needs no
preflight, so a page of any origin can make the browser send one, and the code, refresh token or
DPoP proof it carries must not be used up by a page that will never see the answer. A request
without ``Origin`` (a server, a native app) is not judged at all: no CORS, no cost. Nor is one
from the issuer's own origin (``same_origin``: Swagger UI's "Try it out" on ``/docs``), which is no
cross-origin request.

Every route not marked (the hosted pages, ``/oauth2/authorize``, the console, the Neucron and admin
APIs, introspection) answers no CORS: those are cookie-authenticated or for servers only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib.parse import urlsplit

from grantd.core import access_token, client_metadata
from grantd.core.client_auth import ClientAuthentication, PublicClient, Unauthenticated
from grantd.core.clients import PUBLIC
from grantd.core.context import Context
from grantd.core.errors import InvalidRequest
from grantd.store import apps as app_store

OPEN = "open"
CLIENT = "client"

# What a preflight allows and an answer exposes (the same for every marked route).
ALLOW_HEADERS = ("Authorization", "Content-Type", "DPoP")
EXPOSE_HEADERS = ("DPoP-Nonce", "WWW-Authenticate")
MAX_AGE = 3600  # seconds a browser may keep a preflight's answer (Chromium keeps at most 7200)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginNotAllowed(InvalidRequest):
    """A ``CLIENT`` route called from an origin not allowed for the client."""


def origin_of(uri: str) -> str | None:
    """The origin of an ``http``/``https`` URI as a browser sends it in ``Origin`` (RFC 6454 §6.1:
    scheme and host in lower case, the port only when not the scheme's default); None for a URI
    of another scheme (a native app's ``com.example.app:/cb`` has no web origin) or a malformed one."""
    try:
        parts = urlsplit(uri)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_origins(redirect_uris: Iterable[str]) -> frozenset[str]:
    """The origins of an app's redirect URIs: where a browser-based client of the app runs."""
    return frozenset(origin for origin in map(origin_of, redirect_uris) if origin is not None)


def allows(origin: str, client_type: str, redirect_uris: Iterable[str], *, userinfo: bool = False) -> bool:
    """The rule: ``origin`` may read a ``CLIENT`` route's answer for this client."""
    if client_type != PUBLIC and not userinfo:
        return False
    return origin in allowed_origins(redirect_uris)


@functools.lru_cache(maxsize=8)
def _origin_of_issuer(issuer: str) -> str | None:
    return origin_of(issuer)


def same_origin(ctx: Context, origin: str) -> bool:
    """Whether ``origin`` is the issuer's own (a page grantd serves): not a cross-origin request."""
    return origin == _origin_of_issuer(ctx.settings.issuer)


def _refused(origin: str, client_id: str) -> OriginNotAllowed:
    return OriginNotAllowed(
        f"Origin {origin} is not allowed for client {client_id}: a browser may call this endpoint only for a "
        "public client, from the origin of one of its redirect URIs."
    )


async def check(ctx: Context, origin: str, client_id: str, *, userinfo: bool = False) -> bool:
    """Whether ``origin`` may read the answer for the live app ``client_id``: True when it may;
    ``OriginNotAllowed`` when it may not; False when there is no such app (the request then fails
    on its own, unreadable, and nothing is spent), or for the issuer's own origin (not judged)."""
    if same_origin(ctx, origin):
        return False
    if client_metadata.is_url(client_id):  # a client ID metadata document's URL: its app, up to date
        await client_metadata.resolve(ctx, client_id)
    async with ctx.db.read() as conn:
        app = await app_store.live(conn, client_id)
    if app is None:
        return False
    if not allows(origin, app.client_type, app_store.redirect_uris_of(app), userinfo=userinfo):
        raise _refused(origin, client_id)
    return True


async def check_client(ctx: Context, origin: str, auth: ClientAuthentication) -> bool:
    """``check`` for a request to a client-authenticated endpoint, by how it authenticates: a public
    client's ``client_id`` is judged; a secret or an assertion (a confidential client) is refused
    whoever it names; no authentication at all names no client (False: it fails on its own)."""
    if same_origin(ctx, origin):
        return False
    if isinstance(auth, PublicClient):
        return await check(ctx, origin, auth.client_id)
    if isinstance(auth, Unauthenticated):
        return False
    raise OriginNotAllowed(
        f"Origin {origin} is not allowed: a confidential client (a secret or a signed assertion) is never "
        "answered in a browser, which cannot keep its credentials; use a public client with PKCE."
    )


async def check_access_token(ctx: Context, origin: str, token: str) -> bool:
    """``check`` at UserInfo: for the client an access token of grantd's was issued to (its
    signature is checked here; whether it is live, UserInfo judges). False for anything else."""
    claims = access_token.claims_of(ctx, token)
    client_id = claims.get("client_id") if claims is not None else None
    if not isinstance(client_id, str):
        return False
    return await check(ctx, origin, client_id, userinfo=True)
