"""Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).

A client registers itself by POSTing its metadata to ``/oauth2/register``, as the operator's
policy (``GRANTD_DYNAMIC_REGISTRATION``) allows:

- ``off``: not at all (the metadata documents do not name the endpoint);
- ``token``: with an initial access token (RFC 7591 §3, a Bearer token) that a developer created
  (``/v1/registration-tokens``, the console) or an operator (``grantd registration-tokens
  create``). The app is the developer's, as if registered through ``/v1/apps``; an operator's
  token registers apps no developer owns (``store.apps.SELF_REGISTERED``);
- ``open``: anyone, rate-limited per client address (an initial access token, if sent, still
  names the owner).

The metadata is RFC 7591 §2's, mapped onto an app's settings, which are checked by the rules every
other way of registering an app is checked by (``core.apps.check_app``); a value refused is
``invalid_redirect_uri`` (a redirect URI) or ``invalid_client_metadata`` (RFC 7591 §3.2.2):

- ``redirect_uris`` → the app's redirect URIs (at least one); ``client_name`` → its name (default:
  the host of the first redirect URI); ``scope`` → its permissions (the catalog's names in it;
  absent, or only OpenID Connect's standard scopes: every permission of the catalog);
- ``token_endpoint_auth_method`` (default ``client_secret_basic``): ``none`` registers a public
  client, the others a confidential one; ``client_secret_basic``/``client_secret_post`` get a
  ``client_secret`` (a new key's secret, shown once), ``private_key_jwt`` needs ``jwks`` or
  ``jwks_uri``;
- ``grant_types`` (default ``authorization_code``) among the token endpoint's (a public client
  cannot have ``client_credentials``), ``response_types`` only ``code``; ``application_type``
  ``web`` (default: no private-use scheme redirect URI) or ``native``;
- the branding and OpenID Connect settings by their own names (``logo_uri``, ``client_uri``,
  ``tos_uri``, ``policy_uri``, ``post_logout_redirect_uris``, ``jwks``, ``jwks_uri``,
  ``subject_type``, …). Metadata grantd does not know is ignored (RFC 7591 §2).

The answer carries a registration access token (RFC 7592): random, stored as a keyed hash, the
Bearer token that reads (GET), replaces (PUT) and deletes (DELETE: the app is disabled)
``/oauth2/register/{client_id}``. A registered app is an app like any other: its developer (or
the operator) sees it, changes it and disables it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from grantd.core import apps, audit, client_auth, grants, openid, ratelimit
from grantd.core import permissions as perms
from grantd.core.clients import CLIENT_SECRET_BASIC, CONFIDENTIAL, PRIVATE_KEY_JWT, PUBLIC, TOKEN_AUTH_NONE
from grantd.core.context import Context
from grantd.core.errors import (
    GrantdError,
    InvalidClientMetadata,
    InvalidRedirectUri,
    InvalidToken,
    NotFound,
)
from grantd.crypto.secrets import new_secret, new_uuid
from grantd.store import apps as app_store
from grantd.store import registration as store

POLICIES = ("off", "token", "open")
APPLICATION_TYPES = ("web", "native")
# How an app came to be (the ``registration`` column); None: by its developer.
BY_INITIAL_ACCESS_TOKEN = "initial_access_token"
BY_OPEN_REGISTRATION = "open"
INITIAL_ACCESS_TOKEN_PREFIX = "gri_"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
# The metadata that is a string, when given.
_STRINGS = (
    "client_name", "scope", "token_endpoint_auth_method", "application_type",
    *apps.BRANDING_FIELDS, "id_token_signed_response_alg", "subject_type", "sector_identifier_uri", "jwks_uri",
)


def endpoint(ctx: Context) -> str | None:
    """The registration endpoint's URL, None when the policy is ``off`` (RFC 8414 ``registration_endpoint``)."""
    return None if ctx.settings.dynamic_registration == "off" else f"{ctx.settings.issuer}/oauth2/register"


@dataclass(frozen=True, slots=True)
class Registered:
    """What the registration endpoint answers (RFC 7591 §3.2.1)."""

    app: apps.App
    metadata: dict[str, Any]


# ---------------------------------------------------------------- the metadata: RFC 7591 §2 to an app's settings


def _list_of_strings(name: str, value: Any, error: type[GrantdError] = InvalidClientMetadata) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise error(f"{name} must be an array of strings.")
    return value


def application_type_of(application_type: str | None, redirect_uris: Sequence[SplitResult]) -> str:
    """RFC 7591 §2's ``application_type`` (as OpenID Connect Dynamic Client Registration 1.0 §2
    defines it): ``web`` (the default) or ``native``. A web client's redirect URIs are https (or
    http on a loopback host); a private-use scheme's is a native client's."""
    application_type = application_type or "web"
    if application_type not in APPLICATION_TYPES:
        raise InvalidClientMetadata("application_type must be web or native.")
    if application_type == "web":
        for parts in redirect_uris:
            if parts.scheme.lower() not in ("https", "http"):
                raise InvalidRedirectUri(
                    "A web client's redirect_uris are https (or http on a loopback host); a private-use scheme "
                    "needs application_type native."
                )
    return application_type


def permissions_of_scope(ctx: Context, scope: str | None) -> str:
    """RFC 7591 §2's ``scope`` (space-separated) as an app's permissions (comma-separated): the
    catalog's names in it, OpenID Connect's standard scopes left out (every app may ask for those);
    absent, or only standard scopes: every permission of the catalog."""
    named = [name for name in (scope or "").split() if name not in openid.SCOPES]
    unknown = [name for name in named if name not in ctx.catalog.descriptions]
    if unknown:
        raise InvalidClientMetadata(f"scope: unknown permission {unknown[0][:60]!r}.")
    return perms.join(named) if named else perms.join(tuple(ctx.catalog.descriptions))


@dataclass(frozen=True, slots=True)
class _Settings:
    name: str
    redirect_uris: list[str]
    permissions: str
    client_type: str
    brand: dict[str, str | None]
    openid: dict[str, Any]
    application_type: str
    grant_types: list[str]


def _settings(ctx: Context, metadata: Mapping[str, Any], *, replacing: bool = False) -> _Settings:
    """The app's settings the metadata asks for; type and RFC 7591 rules (the app's own rules are
    ``apps.check_app``'s). ``replacing``: RFC 7592 §2.2, a setting left out is cleared."""
    if not isinstance(metadata, Mapping):
        raise InvalidClientMetadata("The client metadata must be a JSON object.")
    for name in _STRINGS:
        if metadata.get(name) is not None and not isinstance(metadata[name], str):
            raise InvalidClientMetadata(f"{name} must be a string.")
    uris = _list_of_strings("redirect_uris", metadata.get("redirect_uris", []), InvalidRedirectUri)
    if not uris:
        raise InvalidRedirectUri("redirect_uris must list at least one URI.")
    try:
        parsed = [urlsplit(uri) for uri in uris]
    except ValueError:
        raise InvalidRedirectUri("redirect_uris: an item is not a valid URI.") from None
    method = metadata.get("token_endpoint_auth_method") or CLIENT_SECRET_BASIC
    if method not in (*SECRET_METHODS, PRIVATE_KEY_JWT, TOKEN_AUTH_NONE):
        raise InvalidClientMetadata(
            "token_endpoint_auth_method must be one of: client_secret_basic, client_secret_post, private_key_jwt, none."
        )
    client_type = PUBLIC if method == TOKEN_AUTH_NONE else CONFIDENTIAL
    grant_types = _list_of_strings("grant_types", metadata.get("grant_types") or ["authorization_code"])
    for grant_type in grant_types:
        if grant_type not in grants.GRANT_TYPES:
            raise InvalidClientMetadata(
                f"grant_types: {grant_type[:60]!r} is not supported; use: {', '.join(grants.GRANT_TYPES)}."
            )
        if grant_type == "client_credentials" and client_type == PUBLIC:
            raise InvalidClientMetadata("grant_types: a client that authenticates by none cannot use client_credentials.")
    response_types = _list_of_strings("response_types", metadata.get("response_types") or ["code"])
    if any(response_type != "code" for response_type in response_types):
        raise InvalidClientMetadata("response_types: only code is supported.")
    application_type = application_type_of(metadata.get("application_type"), parsed)
    permissions = permissions_of_scope(ctx, metadata.get("scope"))
    first = parsed[0]
    name = metadata.get("client_name") or first.hostname or first.scheme or "Client"
    empty = "" if replacing else None
    brand = {field: metadata.get(field, empty) for field in apps.BRANDING_FIELDS}
    settings: dict[str, Any] = {}
    for field in apps.OPENID_FIELDS:
        value = metadata.get(field)
        if field == "token_endpoint_auth_method":
            value = method
        elif field == "jwks" and value is not None and not isinstance(value, dict):
            raise InvalidClientMetadata("jwks must be a JWK Set: a JSON object with keys.")
        elif field in ("require_nonce", "require_pushed_authorization_requests") and value is None and replacing:
            value = False
        elif value is None and replacing:
            value = [] if field == "post_logout_redirect_uris" else ""
        settings[field] = value
    return _Settings(name, uris, permissions, client_type, brand, settings, application_type, grant_types)


def _refused(exc: GrantdError) -> GrantdError:
    """An app rule's refusal as RFC 7591 §3.2.2 names it."""
    fields = apps.field_errors(exc) or {getattr(exc, "field", None) or "": exc.message}
    field, message = next(iter(fields.items()))
    if field == "redirect_uris":
        return InvalidRedirectUri(message)
    return InvalidClientMetadata(message if field in message or not field else f"{field}: {message}")


def _checked(ctx: Context, settings: _Settings) -> apps.CheckedApp:
    try:
        return apps.check_app(
            ctx, settings.name, settings.redirect_uris, settings.permissions, settings.client_type,
            brand=settings.brand, openid=settings.openid,
        )
    except (InvalidClientMetadata, InvalidRedirectUri):
        raise
    except GrantdError as exc:
        raise _refused(exc) from None


def metadata_of(app: apps.App) -> dict[str, Any]:
    """An app's client metadata, by RFC 7591 §2's names: every setting that is set."""
    method = app.openid.auth_method(app.client_type)
    names = perms.parse(app.permissions)
    grant_types = [name for name in grants.GRANT_TYPES if not (name == "client_credentials" and app.client_type == PUBLIC)]
    data: dict[str, Any] = {
        "client_id": app.app_id,
        "client_name": app.name,
        "redirect_uris": list(app.redirect_uris),
        "token_endpoint_auth_method": method,
        "grant_types": grant_types,
        "response_types": ["code"],
        "scope": " ".join((*openid.SCOPES, *names)),
        "application_type": app.application_type or "web",
        **{name: value for name, value in asdict(app.branding).items() if value is not None},
    }
    for name, value in asdict(app.openid).items():
        # A true-or-false setting is shown when it is not its default (refresh_token_rotation: false).
        if name == "token_endpoint_auth_method" or value in (None, ()) or (
            isinstance(value, bool) and value == apps.OPENID_DEFAULTS[name]
        ):
            continue
        data[name] = list(value) if isinstance(value, tuple) else json.loads(value) if name == "jwks" else value
    return data


# ---------------------------------------------------------------- initial access tokens (RFC 7591 §3)


@dataclass(frozen=True, slots=True)
class InitialAccessToken:
    token_id: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class CreatedInitialAccessToken:
    token: InitialAccessToken
    initial_access_token: str  # shown once


async def create_initial_access_token(
    ctx: Context, owner_id: str | None, *, expires_in: int | None = None, address: str | None = None
) -> CreatedInitialAccessToken:
    """A new initial access token: a developer's (``owner_id``: the apps it registers are theirs)
    or the operator's (None: they belong to no developer). Valid until revoked, or ``expires_in``
    seconds."""
    token, token_id, now = INITIAL_ACCESS_TOKEN_PREFIX + new_secret(), new_uuid(), ctx.now()
    expires_at = now + expires_in if expires_in else None
    async with ctx.db.write() as tx:
        await store.insert_token(
            tx, token_id=token_id, token_hash=ctx.hasher.hash(token), owner_id=owner_id, now=now, expires_at=expires_at
        )
        await audit.record(
            ctx, tx, "initial_access_token_created", actor=owner_id or audit.OPERATOR, user_id=owner_id,
            address=address, now=now, token_id=token_id,
        )
    return CreatedInitialAccessToken(InitialAccessToken(token_id, now, expires_at, None), token)


async def list_initial_access_tokens(ctx: Context, owner_id: str | None) -> list[InitialAccessToken]:
    async with ctx.db.read() as conn:
        rows = await store.listed(conn, owner_id)
    return [InitialAccessToken(row.id, row.created_at, row.expires_at, row.revoked_at) for row in rows]


async def revoke_initial_access_token(
    ctx: Context, owner_id: str | None, token_id: str, *, address: str | None = None
) -> InitialAccessToken:
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await store.revoke(tx, owner_id, token_id, now)
        if row is None:
            raise NotFound("Initial access token not found.")
        if row.revoked_at == now:
            await audit.record(
                ctx, tx, "initial_access_token_revoked", actor=owner_id or audit.OPERATOR, user_id=owner_id,
                address=address, now=now, token_id=token_id,
            )
    return InitialAccessToken(row.id, row.created_at, row.expires_at, row.revoked_at)


async def _initial_access_token_owner(ctx: Context, token: str) -> str:
    """The owner of the apps a live initial access token registers; InvalidToken otherwise."""
    if not token.startswith(INITIAL_ACCESS_TOKEN_PREFIX):
        raise InvalidToken("The initial access token is not valid.")
    async with ctx.db.read() as conn:
        row = await store.live_by_hash(conn, ctx.hasher.hash(token), ctx.now())
    if row is None:
        raise InvalidToken("The initial access token is not valid, expired or revoked.")
    return row.owner_id or app_store.SELF_REGISTERED


# ---------------------------------------------------------------- RFC 7591 §3: registration


class RegistrationOff(GrantdError):
    """The operator offers no dynamic registration."""

    error, status_code = "not_found", 404


def offered(ctx: Context) -> None:
    """RegistrationOff when the policy is ``off``: the first thing the endpoint checks."""
    if ctx.settings.dynamic_registration == "off":
        raise RegistrationOff("Dynamic client registration is not offered by this server.")


async def register(
    ctx: Context, metadata: Any, initial_access_token: str | None, *, address: str | None = None
) -> Registered:
    """Register the client ``metadata`` describes, as the policy allows (see the module's words)."""
    offered(ctx)
    policy = ctx.settings.dynamic_registration
    if initial_access_token is not None:
        owner, how = await _initial_access_token_owner(ctx, initial_access_token), BY_INITIAL_ACCESS_TOKEN
    elif policy == "token":
        raise InvalidToken("An initial access token is required to register (Authorization: Bearer).")
    else:
        await ctx.limiter.hit(*ratelimit.registration_limits(ctx.settings, address))
        owner, how = app_store.SELF_REGISTERED, BY_OPEN_REGISTRATION
    settings = _settings(ctx, metadata)
    checked = _checked(ctx, settings)
    registration_access_token = new_secret()
    created = await apps.create(
        ctx, owner, checked.name, checked.redirect_uris, checked.permissions, checked.client_type,
        brand=checked.branding, openid=settings.openid, address=address,
        registration={
            "registration": how,
            "application_type": settings.application_type,
            "registration_access_token_hash": ctx.hasher.hash(registration_access_token),
        },
    )
    app = created.app
    metadata_out = metadata_of(app)
    metadata_out["client_id_issued_at"] = app.created_at
    if app.openid.auth_method(app.client_type) in SECRET_METHODS:
        key = await apps.create_key(ctx, None, app.app_id, address=address)
        metadata_out["client_secret"] = key.key_secret
        metadata_out["client_secret_expires_at"] = 0  # never
    metadata_out["grant_types"] = settings.grant_types
    metadata_out["registration_access_token"] = registration_access_token
    metadata_out["registration_client_uri"] = f"{ctx.settings.issuer}/oauth2/register/{app.app_id}"
    return Registered(app, metadata_out)


# ---------------------------------------------------------------- RFC 7592: read, update, delete


async def _authorized(ctx: Context, client_id: str, registration_access_token: str | None) -> None:
    """RFC 7592 §2: the registration access token of a live registered app; else 401 invalid_token,
    whether the client exists or not."""
    refused = InvalidToken("The registration access token is not valid for this client.")
    if not registration_access_token or "\x00" in client_id:
        raise refused
    async with ctx.db.read() as conn:
        expected = await app_store.registration_token_hash(conn, client_id)
    if expected is None or not ctx.hasher.verify(registration_access_token, expected):
        raise refused


def _managed(app: apps.App, ctx: Context) -> dict[str, Any]:
    data = metadata_of(app)
    data["client_id_issued_at"] = app.created_at
    data["registration_client_uri"] = f"{ctx.settings.issuer}/oauth2/register/{app.app_id}"
    return data


async def read(ctx: Context, client_id: str, registration_access_token: str | None) -> dict[str, Any]:
    """RFC 7592 §2.1: the client's metadata (its secret is stored hashed, so never shown again)."""
    await _authorized(ctx, client_id, registration_access_token)
    return _managed(await apps.get_owned(ctx, None, client_id), ctx)


async def update(
    ctx: Context, client_id: str, registration_access_token: str | None, metadata: Any, *, address: str | None = None
) -> dict[str, Any]:
    """RFC 7592 §2.2: the metadata replaces the client's; what it leaves out is cleared."""
    await _authorized(ctx, client_id, registration_access_token)
    if not isinstance(metadata, Mapping):
        raise InvalidClientMetadata("The client metadata must be a JSON object.")
    if metadata.get("client_id") != client_id:
        raise InvalidClientMetadata("client_id must be the client's own (RFC 7592 §2.2).")
    if metadata.get("client_secret") is not None:
        secret = metadata["client_secret"]
        if not isinstance(secret, str):
            raise InvalidClientMetadata("client_secret must be a string.")
        try:
            await client_auth.ClientSecret(client_id, secret).authenticate(ctx)
        except GrantdError:
            raise InvalidClientMetadata("client_secret is not the client's secret.") from None
    current = await apps.get_owned(ctx, None, client_id)
    method = current.openid.auth_method(current.client_type)  # what PUT leaves out stays, for this one only
    settings = _settings(ctx, {"token_endpoint_auth_method": method, **metadata}, replacing=True)
    if settings.client_type != current.client_type:
        raise InvalidClientMetadata(
            "token_endpoint_auth_method cannot change a public client into a confidential one or back."
        )
    _checked(ctx, settings)  # every rule first, as at registration
    try:
        app = await apps.update(
            ctx, None, client_id, name=settings.name, uris=settings.redirect_uris, permissions=settings.permissions,
            brand=settings.brand, openid=settings.openid, address=address,
        )
    except GrantdError as exc:
        raise _refused(exc) from None
    if settings.application_type != (app.application_type or "web"):
        async with ctx.db.write() as tx:
            await app_store.update_app(tx, client_id, {"application_type": settings.application_type}, ctx.now())
        app = await apps.get_owned(ctx, None, client_id)
    data = _managed(app, ctx)
    data["grant_types"] = settings.grant_types
    return data


async def delete(
    ctx: Context, client_id: str, registration_access_token: str | None, *, address: str | None = None
) -> None:
    """RFC 7592 §2.3: the app is disabled (its keys, codes and tokens stop at once) and the
    registration access token stops working."""
    await _authorized(ctx, client_id, registration_access_token)
    await apps.disable(ctx, None, client_id, address=address)
    async with ctx.db.write() as tx:
        await app_store.clear_registration_token(tx, client_id)

