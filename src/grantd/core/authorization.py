"""Authorization requests: consent and authorization codes (RFC 6749 §4.1, RFC 7636, the Neucron rules).

Two front doors share these rules. The Neucron dialect authorizes in one JSON call
(the app proves itself with its app_key; the first request records consent). The
standard dialect resolves the client and redirect URI first (errors there are never
redirected), then asks the signed-in user on a consent page for what is not yet granted.
Neucron v2 (Neucron's SDK 2.x) checks its request by the standard rules and a few of its own
(``validate_v2_request``), then sends the user to that same consent page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit, urlunsplit

from grantd.core.amr import stored_amr
from grantd.core import audit, client_metadata, dpop, openid, pkce, redirect_uris, resources
from grantd.core import permissions as perms
from grantd.core.accounts import Principal
from grantd.core.clients import FAPI2_CODE_TTL, PUBLIC, OpenIDSettings
from grantd.core.context import Context
from grantd.core.errors import (
    ConsentRequired,
    InvalidClient,
    InvalidRedirectUri,
    InvalidRequest,
    NotFound,
    RequestNotSupported,
    RequestUriNotSupported,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from grantd.crypto.secrets import new_secret, new_uuid
from grantd.store import apps as app_store
from grantd.store import codes as code_store
from grantd.store import grants as grant_store
from grantd.store import users as user_store


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """The Neucron request: the app authenticates with its app_key."""

    app_id: str
    app_key: str
    state: str
    redirect_uri: str
    permissions: str  # comma-separated, as on the wire


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    user_id: str
    state: str
    redirect_url: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Target:
    """A known, live client and one of its registered redirect URIs: safe to redirect to."""

    app_id: str
    app_name: str
    owner_email: str | None  # None: no developer owns it (store.apps.SELF_REGISTERED)
    public: bool
    redirect_uri: str
    allowed: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()  # every URI the app registered (its pairwise sector's hosts)
    openid: OpenIDSettings = OpenIDSettings()
    # Whether the request named redirect_uri (else the app's one registered URI stands in): the token
    # request must then send it too (RFC 6749 §4.1.3).
    redirect_uri_included: bool = True
    # How the app came to be (None: by its developer; core.registration, core.client_metadata):
    # the consent page shows a metadata document's host and that no one reviewed the app.
    registration: str | None = None

    def audience(self) -> openid.Audience:
        return openid.Audience(self.app_id, self.openid, self.redirect_uris)


# OpenID Connect Core 1.0 §3.1.2.1: the values of ``prompt`` and ``response_mode`` grantd knows;
# ``create`` is Initiating User Registration via OpenID Connect 1.0's (the sign-up page).
PROMPTS = ("none", "login", "consent", "select_account", "create")
RESPONSE_MODES = ("query", "form_post")


@dataclass(frozen=True, slots=True)
class StandardRequest:
    """A validated OAuth 2.0 authorization request (RFC 6749 §4.1.1 with PKCE), and what OpenID
    Connect adds to it (Core §3.1.2.1): ``nonce``, ``prompt``, ``max_age``, ``response_mode``."""

    target: Target
    permissions: tuple[str, ...]  # every scope granted: the catalog's permissions and the standard scopes
    state: str | None
    code_challenge: str | None
    nonce: str | None = None
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    response_mode: str = "query"
    dpop_jkt: str | None = None  # RFC 9449 §10: the DPoP key the code is bound to
    resources: tuple[str, ...] = ()  # RFC 8707: the resources the tokens may be for

    @property
    def is_openid(self) -> bool:
        return openid.is_openid(self.permissions)


# ---------------------------------------------------------------- shared rules


def missing_from_grant(granted_permissions: str | None, requested: tuple[str, ...]) -> list[str]:
    """The requested permissions the user has not granted yet (all of them when there is no grant)."""
    granted = set(perms.parse(granted_permissions)) if granted_permissions else set()
    return [name for name in requested if name not in granted]


async def _record_consent(  # type: ignore[no-untyped-def]
    ctx: Context, tx, user_id: str, app_id: str, added: tuple[str, ...], now: int, address: str | None = None
) -> None:
    """Add permissions to the user's grant for the app, creating it if there is none.
    Audited as consent_granted with the permissions newly granted (nothing new: no event)."""
    inserted = await grant_store.insert_if_absent(
        tx, grant_id=new_uuid(), user_id=user_id, app_id=app_id, permissions=perms.join(added), now=now
    )
    new = list(added)
    if not inserted:
        grant = await grant_store.of(tx, user_id, app_id)
        new = missing_from_grant(grant.permissions, added)
        if new:
            merged = perms.union(perms.parse(grant.permissions), added)
            await grant_store.set_permissions(tx, grant.id, perms.join(merged), now)
    if new:
        await audit.record(
            ctx, tx, "consent_granted", actor=user_id, user_id=user_id, app_id=app_id, address=address, now=now,
            permissions=new,
        )


# Consent recorded by a decision made elsewhere than the consent page (the device grant's, core.device).
record_consent = _record_consent


class _NewCode(NamedTuple):
    """A code to issue: the code itself, when it expires, its row and its ``code_issued`` audit row
    (what ``code_store.insert_code`` writes)."""

    code: str
    expires_at: int
    row: dict[str, Any]
    event: dict[str, Any]


def _new_code(
    ctx: Context,
    *,
    user_id: str,
    app_id: str,
    redirect_uri: str,
    permissions: tuple[str, ...],
    state: str | None,
    code_challenge: str | None,
    now: int,
    address: str | None = None,
    nonce: str | None = None,
    auth_time: int | None = None,
    amr: str | None = None,
    session_jti: str | None = None,
    dpop_jkt: str | None = None,
    fapi2: bool = False,
    resource_uris: tuple[str, ...] = (),
    redirect_uri_included: bool = True,
) -> _NewCode:
    code = new_secret()
    expires_at = now + code_ttl(ctx, fapi2)
    row = {
        "code_hash": ctx.hasher.hash(code),
        "app_id": app_id,
        "user_id": user_id,
        "redirect_uri": redirect_uri,
        "permissions": perms.join(permissions),
        "state": state or "",
        "code_challenge": code_challenge,
        "created_at": now,
        "expires_at": expires_at,
        "nonce": nonce,
        "auth_time": auth_time,
        "amr": amr,
        "session_jti": session_jti,
        "dpop_jkt": dpop_jkt,
        "resources": resources.stored(resource_uris),
        "redirect_uri_included": redirect_uri_included,
    }
    event = audit.entry(
        ctx, "code_issued", actor=user_id, user_id=user_id, app_id=app_id, address=address, now=now,
        permissions=list(permissions),
    )
    return _NewCode(code, expires_at, row, event)


def code_ttl(ctx: Context, fapi2: bool) -> int:
    """How long a new code lives: ``authorization_code_ttl``, and at most ``FAPI2_CODE_TTL`` for an
    app under the FAPI 2.0 profile (its Security Profile §5.3.2.1)."""
    ttl = ctx.settings.authorization_code_ttl
    return min(ttl, FAPI2_CODE_TTL) if fapi2 else ttl


def with_query(uri: str, **params: str | None) -> str:
    """``uri`` with ``params`` added to its query, keeping the query it has."""
    parts = urlsplit(uri)
    added = urlencode([(k, v) for k, v in params.items() if v is not None])
    # The registered query is kept character for character (RFC 6749 §3.1.2), not re-encoded.
    separator = "&" if parts.query and added and not parts.query.endswith("&") else ""
    return urlunsplit(parts._replace(query=parts.query + separator + added))


# ---------------------------------------------------------------- the Neucron dialect

# Neither Neucron dialect can carry a pushed request (RFC 9126): v1's JSON call and v2's SDK send
# their own fixed fields, no request_uri. An app that requires pushed requests (its setting, the
# server's, or the FAPI 2.0 profile) is refused by both.
_PUSHED_ONLY = (
    "This app accepts only pushed authorization requests (RFC 9126), which the Neucron authorize calls "
    "cannot carry: POST the request to /oauth2/par, then send the browser to /oauth2/authorize with its request_uri."
)


async def _checked(ctx: Context, conn, request: AuthorizationRequest) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """The requested permissions, once the app, its key, the redirect URI and the permissions all check out."""
    return _checked_app(ctx, await app_store.live(conn, request.app_id), request)


def _checked_app(ctx: Context, app: Any, request: AuthorizationRequest) -> tuple[str, ...]:
    """``_checked`` of the app as read (a live app's row, or None)."""
    requested = perms.parse(request.permissions)
    if app is None or not ctx.hasher.verify(request.app_key, app.app_key_hash):
        raise InvalidClient("Unknown app, wrong app_key, or the app is disabled.")
    if not redirect_uris.matches(app_store.redirect_uris_of(app), request.redirect_uri):
        raise InvalidRedirectUri("redirect_uri is not registered for this app.")
    ctx.catalog.require_allowed(requested, perms.parse(app.permissions))
    return requested


async def authorize(
    ctx: Context, user: Principal, request: AuthorizationRequest, *, address: str | None = None
) -> IssuedCode:
    """Issue a code for the requested permissions: the first request records consent, later ones must lie within it.

    The app and the user's grant are read by one SELECT. With a grant, the code and its audit row
    are one write (on PostgreSQL one statement in autocommit: ``code_store.insert_code``); the
    first authorization records consent and issues the code in one transaction."""
    now = ctx.now()
    async with ctx.db.read() as conn:
        app, grant = await grant_store.live_app_and_grant(conn, request.app_id, user.user_id)
    requested = _checked_app(ctx, app, request)
    if pushed_only(ctx, OpenIDSettings.of(app)):
        raise UnauthorizedClient(_PUSHED_ONLY)
    missing = missing_from_grant(grant.permissions, requested) if grant is not None else []
    if missing:
        raise ConsentRequired(
            f"The user has not granted: {', '.join(missing)}. "
            "Add them with PATCH /oauth/permissions/grant, then authorize again."
        )
    new = _new_code(
        ctx, user_id=user.user_id, app_id=request.app_id, redirect_uri=request.redirect_uri, permissions=requested,
        state=request.state, code_challenge=None, now=now, address=address,
    )
    written = False
    if grant is not None:
        async with ctx.db.write_one() as tx:
            # Written only while the grant exists: one revoked since it was read is recorded again
            # below, as the first authorization records it.
            written = await code_store.insert_code(tx, new.row, new.event, while_granted=True)
    if not written:
        async with ctx.db.write() as tx:
            await _record_consent(ctx, tx, user.user_id, request.app_id, requested, now, address)
            await code_store.insert_code(tx, new.row, new.event)
    redirect_url = with_query(request.redirect_uri, code=new.code, state=request.state)
    return IssuedCode(new.code, user.user_id, request.state, redirect_url, new.expires_at)


async def grant_permissions(
    ctx: Context, user: Principal, request: AuthorizationRequest, *, address: str | None = None
) -> None:
    """Add the requested permissions to the user's grant for the app, creating it if there is none."""
    async with ctx.db.write() as tx:
        requested = await _checked(ctx, tx, request)
        await _record_consent(ctx, tx, user.user_id, request.app_id, requested, ctx.now(), address)


# ---------------------------------------------------------------- the standard dialect


async def resolve_target(ctx: Context, client_id: str | None, redirect_uri: str | None) -> Target:
    """The client and redirect URI of a request. Errors here must be shown, never redirected (RFC 6749 §4.1.2.1)."""
    if not client_id:
        raise InvalidClient("client_id is missing.")
    if "\x00" in client_id:  # no app id holds U+0000, and PostgreSQL text cannot: never look it up
        raise InvalidClient("Unknown client_id, or the app is disabled.")
    await client_metadata.resolve(ctx, client_id)  # a client ID metadata document's URL: fetched when stale
    async with ctx.db.read() as conn:
        app = await app_store.live(conn, client_id)
        owner = await user_store.by_id(conn, app.owner_id) if app is not None else None
    if app is None or owner is None:
        raise InvalidClient("Unknown client_id, or the app is disabled.")
    registered = app_store.redirect_uris_of(app)
    included = redirect_uri is not None
    if redirect_uri is None:
        if len(registered) != 1:
            raise InvalidRedirectUri("redirect_uri is required: the app registered more than one.")
        redirect_uri = registered[0]
    elif not redirect_uris.matches(registered, redirect_uri):
        raise InvalidRedirectUri("redirect_uri is not registered for this app.")
    return Target(
        app_id=app.id,
        app_name=app.name,
        owner_email=None if app.owner_id == app_store.SELF_REGISTERED else owner.email,
        public=app.client_type == PUBLIC,
        redirect_uri=redirect_uri,
        allowed=perms.parse(app.permissions),
        redirect_uris=tuple(registered),
        openid=OpenIDSettings.of(app),
        redirect_uri_included=included,
        registration=app.registration,
    )


def validate_request(
    ctx: Context,
    target: Target,
    *,
    response_type: str | None,
    scope: str | None,
    state: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
    nonce: str | None = None,
    prompt: str | None = None,
    max_age: str | None = None,
    response_mode: str | None = None,
    request_object: str | None = None,
    request_uri: str | None = None,
    dpop_jkt: str | None = None,
    resource: str | None = None,
) -> StandardRequest:
    """The rest of the request; errors here are redirected back to the client with ``state``.

    ``scope`` holds the catalog's permissions, which must be the app's, and the standard scopes of
    OpenID Connect (``openid.SCOPES``), which every app may ask for. Without a scope, the app's
    permissions. The OpenID Connect parameters (Core §3.1.2.1) are checked whatever the scope.
    ``resource``: the request's RFC 8707 resources (the parameter, repeats joined as
    ``resources.REPEATED`` says); the policy's judgement of them is ``resources.admit``'s, which reads."""
    if response_type != "code":
        raise UnsupportedResponseType("Only response_type=code is supported.")
    if response_mode is not None and response_mode not in RESPONSE_MODES:
        raise InvalidRequest(f"response_mode must be one of: {', '.join(RESPONSE_MODES)}.")
    if request_object is not None:
        raise RequestNotSupported("Request objects (the request parameter) are not supported.")
    if request_uri is not None:
        raise RequestUriNotSupported("request_uri is not supported.")
    for name, value in (("state", state), ("nonce", nonce)):
        if value is not None and "\x00" in value:  # stored with the code; PostgreSQL text cannot hold U+0000
            raise InvalidRequest(f"{name} must not contain the NUL character (%00).")
    if nonce is not None and len(nonce) > openid.NONCE_MAX_LENGTH:
        raise InvalidRequest(f"nonce is too long: at most {openid.NONCE_MAX_LENGTH} characters.")
    prompts = _prompts(prompt)
    age = _max_age(max_age)
    dpop.check_jkt(dpop_jkt)
    pkce.check_challenge(code_challenge, code_challenge_method, public=target.public, fapi2=target.openid.fapi2)
    requested = requested_scope(ctx, target.allowed, scope)
    if openid.is_openid(requested) and nonce is None and target.openid.require_nonce:
        raise InvalidRequest("nonce is required: this app's settings require one in every OpenID request.")
    return StandardRequest(
        target, requested, state, code_challenge, nonce=nonce, prompt=prompts, max_age=age,
        response_mode=response_mode or "query", dpop_jkt=dpop_jkt, resources=resources.from_parameter(resource),
    )


def requested_scope(ctx: Context, allowed: tuple[str, ...], scope: str | None) -> tuple[str, ...]:
    """What a request's ``scope`` asks for (RFC 6749 §3.3): the catalog's permissions, which must be
    among the app's ``allowed``, and the standard scopes of OpenID Connect; without a scope, the
    app's permissions. The authorization endpoint's rule, and the device authorization endpoint's."""
    requested = allowed if not scope else perms.parse(scope, field="scope", separator=" ")
    ctx.catalog.require_allowed(openid.split(requested)[1], allowed)
    return requested


def _prompts(value: str | None) -> frozenset[str]:
    """``prompt`` (Core §3.1.2.1): space-separated values of ``PROMPTS``; ``none`` alone."""
    if value is None:
        return frozenset()
    prompts = frozenset(value.split())
    unknown = sorted(prompts - set(PROMPTS))
    if unknown:
        raise InvalidRequest(f"prompt has an unknown value: {unknown[0][:40]!r}.")
    if "none" in prompts and len(prompts) > 1:
        raise InvalidRequest("prompt=none cannot be combined with another value.")
    return prompts


def _max_age(value: str | None) -> int | None:
    """``max_age`` (Core §3.1.2.1): a number of seconds, 0 or more."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise InvalidRequest("max_age must be a whole number of seconds.")
    return int(value)


async def missing_consent(ctx: Context, user: Principal, request: StandardRequest) -> list[str]:
    """What the consent page must ask for: the requested permissions not granted yet."""
    async with ctx.db.read() as conn:
        grant = await grant_store.of(conn, user.user_id, request.target.app_id)
    return missing_from_grant(grant.permissions if grant else None, request.permissions)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send the user back to the client with, and how: the redirect URI's query (RFC 6749
    §4.1.2) or a form the browser posts to it (OAuth 2.0 Form Post Response Mode)."""

    redirect_uri: str
    params: dict[str, str]
    response_mode: str = "query"

    def url(self) -> str:
        return with_query(self.redirect_uri, **self.params)


def _answer(ctx: Context, target: Target, response_mode: str, **params: str | None) -> Answer:
    """Every answer carries ``iss`` (RFC 9207)."""
    values = {name: value for name, value in params.items() if value is not None}
    values["iss"] = ctx.settings.issuer
    return Answer(target.redirect_uri, values, response_mode)


async def approve(ctx: Context, user: Principal, request: StandardRequest, *, address: str | None = None) -> Answer:
    """Record consent for the request and issue a code; what to send the user back with.

    An OpenID request's code carries the nonce, when the session signed in (``auth_time``), and,
    without ``offline_access``, the session itself: its tokens end when the session does (Core §11)."""
    now = ctx.now()
    target = request.target
    bound = request.is_openid and openid.OFFLINE_ACCESS not in request.permissions
    async with ctx.db.write() as tx:
        await _record_consent(ctx, tx, user.user_id, target.app_id, request.permissions, now, address)
        new = _new_code(
            ctx,
            user_id=user.user_id,
            app_id=target.app_id,
            redirect_uri=target.redirect_uri,
            permissions=request.permissions,
            state=request.state,
            code_challenge=request.code_challenge,
            now=now,
            address=address,
            nonce=request.nonce,
            auth_time=user.issued_at or None,
            amr=stored_amr(user.amr),
            session_jti=user.jti if bound else None,
            dpop_jkt=request.dpop_jkt,
            fapi2=target.openid.fapi2,
            resource_uris=request.resources,
            redirect_uri_included=target.redirect_uri_included,
        )
        await code_store.insert_code(tx, new.row, new.event)
    return _answer(ctx, target, request.response_mode, code=new.code, state=request.state)


def error_redirect(
    ctx: Context, target: Target, error: str, description: str, state: str | None, response_mode: str = "query"
) -> Answer:
    """What to send the user back with on an error (RFC 6749 §4.1.2.1, RFC 9207 ``iss``)."""
    return _answer(ctx, target, response_mode, error=error, error_description=description, state=state)


# ---------------------------------------------------------------- the Neucron v2 dialect (Neucron's SDK 2.x)


def validate_v2_request(
    ctx: Context, target: Target, *, response_type: str | None, state: str | None, platform: str | None
) -> StandardRequest:
    """A Neucron v2 authorization request: the standard one (``validate_request``, every permission
    the app may ask for), for a confidential app only (v2 sends no PKCE, which a public client
    needs), with a ``state``, and naming the app by its registered name as ``platform``. The hosted
    pages then carry it out as any other (``approve``)."""
    if target.public:
        raise UnauthorizedClient(
            "This app is a public client: Neucron v2 sends no PKCE, so it serves confidential apps only. "
            "A public client uses /oauth2/authorize with PKCE (S256)."
        )
    if pushed_only(ctx, target.openid):
        raise UnauthorizedClient(_PUSHED_ONLY)
    if platform is None:
        raise InvalidRequest("platform is required: the app's name as registered.")
    if platform != target.app_name:
        raise InvalidRequest("platform does not match the app's registered name (see GET /oauth/client-info).")
    if state is None:
        raise InvalidRequest("state is required.")
    return validate_request(
        ctx, target, response_type=response_type, scope=None, state=state, code_challenge=None, code_challenge_method=None
    )


async def public_client(ctx: Context, client_id: str) -> Any:
    """The live app ``client_id`` names (its row), for what anyone may see of it before signing in;
    NotFound for an unknown or disabled app."""
    async with ctx.db.read() as conn:
        app = await app_store.live(conn, client_id) if "\x00" not in client_id else None
    if app is None:
        raise NotFound("Unknown client_id, or the app is disabled.")
    return app


def pushed_only(ctx: Context, settings: OpenIDSettings) -> bool:
    """RFC 9126 §6: whether the requests of the app with ``settings`` must be pushed (``core.par``):
    its setting, the server's, or the FAPI 2.0 profile (its Security Profile §5.3.2.1: PAR only)."""
    return (
        ctx.settings.require_pushed_authorization_requests
        or settings.require_pushed_authorization_requests
        or settings.fapi2
    )
