"""A developer's apps and their API keys, in the Neucron envelope. Only the owner sees an app."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Path
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import context, current_user, peer_address
from grantd.api.envelope import envelope
from grantd.api.wire import NO_NUL, STRICT, rfc3339
from grantd.core import apps, jwks, registration
from grantd.core import permissions as perms
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRedirectUri, InvalidRequest, InvalidScope

RedirectUri = Annotated[str, Field(max_length=2000)]
AppId = Annotated[str, Path(max_length=64), NO_NUL]
KeyId = Annotated[str, Path(max_length=64), NO_NUL]
User = Annotated[Principal, Depends(current_user)]
Ctx = Annotated[Context, Depends(context)]
Address = Annotated[str | None, Depends(peer_address)]  # for the audit log


_URI_DOC = "An absolute https URL (http only on localhost, 127.0.0.1 or [::1]), at most 2048 characters."


def _setting(description: str, example: str, max_length: int | None = None) -> Any:
    """A branding setting of a request (and of the answer, where null means not set)."""
    return Field(
        None, max_length=max_length, examples=[example],
        description=f'{description} In PATCH: absent or null leaves it as it is; "" removes it.',
    )


class Branding(BaseModel):
    """An app's branding, shown on the hosted sign-in, sign-up and consent pages when someone
    signs in for the app. Names as RFC 7591 §2 gives them where it names one."""

    model_config = STRICT
    logo_uri: str | None = _setting(
        f"The app's logo, shown at 48×48 CSS pixels. {_URI_DOC} Its host: a DNS name or an IPv4 address.",
        "https://yourapp.com/logo.png", apps.BRANDING_URI_MAX_LENGTH,
    )
    client_uri: str | None = _setting(f"The app's website. {_URI_DOC}", "https://yourapp.com", apps.BRANDING_URI_MAX_LENGTH)
    tos_uri: str | None = _setting(
        f"The app's terms of service. {_URI_DOC}", "https://yourapp.com/terms", apps.BRANDING_URI_MAX_LENGTH
    )
    policy_uri: str | None = _setting(
        f"The app's privacy policy. {_URI_DOC}", "https://yourapp.com/privacy", apps.BRANDING_URI_MAX_LENGTH
    )
    description: str | None = _setting(
        "What the app does: at most 500 printable characters, one line.", "Prints your photos.",
        apps.DESCRIPTION_MAX_LENGTH,
    )
    domain: str | None = _setting(
        "The app's host name, as its developer states it (not verified; the pages do not show it).", "yourapp.com",
        apps.DOMAIN_MAX_LENGTH,
    )
    accent_color: str | None = _setting("The colour of the pages' buttons and links: #rgb or #rrggbb.", "#0b5cad")
    theme: str | None = _setting("light or dark: the pages' colours, whatever the browser prefers.", "light")


def branding_of(body: Branding) -> dict[str, str | None]:
    """The settings a request body carries (None: not given)."""
    return {name: getattr(body, name) for name in apps.BRANDING_FIELDS}


_CLEARS = 'In PATCH: absent or null leaves it as it is; {empty} sets it back to the default.'


class OpenIDSettings(BaseModel):
    """An app's OpenID Connect settings, named as OpenID Connect Dynamic Client Registration 1.0 §2
    names them, so that the same JSON (with RegistrationNames' client_name and scope, and
    application_type; a public client with client_type public here) registers an app here and at
    a registration endpoint. The answers differ: app_id and app_key here, client_id and
    client_secret there."""

    model_config = STRICT
    post_logout_redirect_uris: list[RedirectUri] | None = Field(
        None, max_length=apps.MAX_REDIRECT_URIS, examples=[["https://yourapp.com/signed-out"]],
        description="Where the end-session endpoint may send the browser back after signing out "
        "(RP-Initiated Logout 1.0 §3.1): exact URIs, by the rules of redirect_uris. " + _CLEARS.format(empty="[]"),
    )
    id_token_signed_response_alg: str | None = Field(
        None, max_length=16, examples=["RS256"],
        description="RS256 (the default) or ES256: how the app's ID tokens are signed. " + _CLEARS.format(empty='""'),
    )
    subject_type: str | None = Field(
        None, max_length=16, examples=["public"],
        description="public (the default: one sub for a user in every app) or pairwise (a sub of the user's own "
        "for each sector, OpenID Connect Core 1.0 §8). " + _CLEARS.format(empty='""'),
    )
    sector_identifier_uri: str | None = Field(
        None, max_length=apps.BRANDING_URI_MAX_LENGTH, examples=["https://yourapp.com/sector.json"],
        description="For pairwise subjects: its host is the sector (else the one host of the redirect_uris); "
        "required with pairwise when the redirect_uris are on more than one host. " + _URI_DOC
        + " Its document is not fetched. " + _CLEARS.format(empty='""'),
    )
    require_nonce: bool | None = Field(
        None, examples=[True],
        description="true: an OpenID request (scope openid) without a nonce is refused. " + _CLEARS.format(empty="false"),
    )
    require_pushed_authorization_requests: bool | None = Field(
        None, examples=[True],
        description="true: an authorization request is accepted only when pushed first (RFC 9126 §6: POST "
        "/oauth2/par, then /oauth2/authorize with its request_uri). " + _CLEARS.format(empty="false"),
    )
    token_endpoint_auth_method: str | None = Field(
        None, max_length=32, examples=["private_key_jwt"],
        description="How the app authenticates at /oauth2/token, /revoke and /introspect (RFC 7591 §2): "
        "client_secret_basic or client_secret_post (a key secret, either way), private_key_jwt (RFC 7523: an "
        "assertion signed by a key of jwks or jwks_uri; the app's secrets are then refused) or none (a public "
        "client). The default: none for a public client, else client_secret_basic. " + _CLEARS.format(empty='""'),
    )
    jwks: dict[str, Any] | None = Field(
        None, examples=[{"keys": [{"kty": "EC", "crv": "P-256", "x": "…", "y": "…", "kid": "k1"}]}],
        description="For private_key_jwt: the app's JWK Set, public keys only (RSA, EC P-256 or Ed25519; at most "
        f"{jwks.MAX_KEYS} keys, {jwks.MAX_JWKS_BYTES} bytes). " + _CLEARS.format(empty="{}"),
    )
    jwks_uri: str | None = Field(
        None, max_length=apps.BRANDING_URI_MAX_LENGTH, examples=["https://yourapp.com/jwks.json"],
        description="For private_key_jwt, instead of jwks: where the app publishes its JWK Set; fetched over https "
        "from a public address, cached for 5 minutes. " + _CLEARS.format(empty='""'),
    )
    dpop_bound_access_tokens: bool | None = Field(
        None, examples=[True],
        description="true: every token request of the app must carry a DPoP proof (RFC 9449 §5.2), so that all "
        "its access tokens are bound to the app's key; required whatever it says under security_profile fapi2. "
        + _CLEARS.format(empty="false"),
    )
    security_profile: str | None = Field(
        None, max_length=16, examples=["fapi2"],
        description="grantd's own: none (the default) or fapi2, the FAPI 2.0 Security Profile, enforced whatever "
        "the other settings say: pushed authorization requests only, PKCE with S256, private_key_jwt whose "
        "assertions name the issuer alone as aud, codes living at most 60 seconds, iss in every authorization "
        "response, refresh tokens not rotated, a DPoP proof with every token request (as dpop_bound_access_tokens "
        "true). fapi2 needs a confidential app with token_endpoint_auth_method "
        "private_key_jwt and jwks or jwks_uri. " + _CLEARS.format(empty='""'),
    )
    refresh_token_rotation: bool | None = Field(
        None, examples=[False],
        description="grantd's own: true (the default) answers a refresh with a new refresh token and retires "
        "the one presented (RFC 9700 §4.14.2); false answers with the same refresh token, its lifetime "
        "unchanged. Off whatever it says under security_profile fapi2. In PATCH: absent or null leaves it as it is.",
    )


def openid_of(body: OpenIDSettings) -> dict[str, Any]:
    """The OpenID Connect settings a request body carries (None: not given)."""
    return {name: getattr(body, name) for name in apps.OPENID_FIELDS}


class OpenIDSettingsData(BaseModel):
    """An app's OpenID Connect settings, each with its default when not set."""

    post_logout_redirect_uris: list[str] = Field(description="Exact URIs; [] when none.")
    id_token_signed_response_alg: str = Field(description="RS256 or ES256.")
    subject_type: str = Field(description="public or pairwise.")
    sector_identifier_uri: str | None
    require_nonce: bool
    require_pushed_authorization_requests: bool
    token_endpoint_auth_method: str = Field(description="The method in force: the registered one, else the client type's default.")
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    dpop_bound_access_tokens: bool = Field(description="The setting as registered (under fapi2, DPoP is required whatever it says).")
    security_profile: str = Field(description="none or fapi2 (the FAPI 2.0 Security Profile).")
    refresh_token_rotation: bool = Field(description="The setting as registered (under fapi2, refresh tokens are not rotated whatever it says).")


class RegistrationNames(BaseModel):
    """RFC 7591 §2's names for an app's name and permissions, taken beside grantd's own (Neucron's)."""

    model_config = STRICT
    client_name: str | None = Field(
        None, max_length=200, examples=["My App"],
        description="RFC 7591's name for name: either may be sent; both, only if the same.",
    )
    scope: str | None = Field(
        None, max_length=1024, examples=["openid read_profile write_data"],
        description="RFC 7591's name for permissions, space-separated: the catalog's permissions in it, "
        "OpenID Connect's standard scopes (openid, profile, …) left out as every app may ask for them; only "
        "standard scopes: every permission of the catalog. Either may be sent; both, only if they name the same.",
    )


class AppCreate(Branding, OpenIDSettings, RegistrationNames):
    model_config = STRICT
    name: str | None = Field(
        None, max_length=200, examples=["My App"], description="Required, as name or client_name."
    )
    redirect_uris: list[RedirectUri] = Field(max_length=20, examples=[["https://yourapp.com/oauth/callback"]])
    permissions: str | None = Field(
        None, max_length=1024, examples=["read_profile,write_data"],
        description="The most the app may ask for, comma-separated. Required, as permissions or scope.",
    )
    client_type: Literal["confidential", "public"] = Field(
        "confidential",
        description="public: a browser or native app that cannot keep a secret; it must use PKCE and "
        "authenticates at /oauth2/token by client_id alone.",
    )
    application_type: str | None = Field(
        None, max_length=16, examples=["native"],
        description="RFC 7591's web (the default) or native, fixed at registration: a web app's redirect_uris "
        "are https (or http on a loopback host), a private-use scheme is a native app's.",
    )


class AppUpdate(Branding, OpenIDSettings, RegistrationNames):
    model_config = STRICT
    name: str | None = Field(None, max_length=200)
    redirect_uris: list[RedirectUri] | None = Field(None, max_length=20)
    permissions: str | None = Field(None, max_length=1024)


def _one_of(ours: str, theirs: str, value: str | None, rfc7591: str | None) -> str | None:
    """``value`` or the RFC 7591 one; both only when they say the same."""
    if value is not None and rfc7591 is not None and value != rfc7591:
        raise InvalidRequest(f"{ours} and {theirs} differ: send one of them.", field=theirs)
    return value if value is not None else rfc7591


def names_of(ctx: Context, body: AppCreate | AppUpdate) -> tuple[str | None, str | None]:
    """The app's name and permissions a body gives, by grantd's names or RFC 7591's (None: not given)."""
    permissions = None
    if body.scope is not None:
        try:
            permissions = registration.permissions_of_scope(ctx, body.scope)
        except GrantdError as exc:  # a permission not in the catalog, as in permissions
            raise InvalidScope(exc.message) from None
    if body.permissions is not None and permissions is not None:
        if set(perms.parse(body.permissions)) != set(perms.parse(permissions)):
            raise InvalidRequest("permissions and scope name different permissions: send one of them.", field="scope")
        permissions = body.permissions
    return _one_of("name", "client_name", body.name, body.client_name), _one_of(
        "permissions", "scope", body.permissions, permissions
    )


class AppData(Branding, OpenIDSettingsData):
    """An app; a branding setting that is not set is null, an OpenID Connect one is its default."""

    app_id: str
    name: str
    redirect_uris: list[str]
    permissions: str
    created_at: str
    updated_at: str
    disabled: bool
    disabled_at: str | None
    client_type: str
    registration: str | None = Field(
        description="How the app was registered: null by its developer here, in the console or the CLI; "
        "initial_access_token or open: by the client itself at /oauth2/register (RFC 7591)."
    )
    application_type: str = Field(description="RFC 7591's web or native (web unless registered as native).")


class CreatedAppData(AppData):
    app_key: str = Field(description="The app's secret key. Shown only here, once.")


class AppList(BaseModel):
    apps: list[AppData]


class CreatedKeyData(BaseModel):
    key_id: str
    key_secret: str = Field(description="Shown only here, once.")
    created_at: str


class KeyData(BaseModel):
    key_id: str
    created_at: str
    last_used_at: str | None = Field(
        description="When the key last obtained an access token. Each server keeps it in memory and writes it every "
        "30 seconds and when it stops, so another server may show it up to 30 seconds behind."
    )
    revoked: bool
    revoked_at: str | None


class KeyList(BaseModel):
    keys: list[KeyData]


def app_data(app: apps.App) -> dict[str, object]:
    return {
        "app_id": app.app_id,
        "name": app.name,
        "redirect_uris": app.redirect_uris,
        "permissions": app.permissions,
        "created_at": rfc3339(app.created_at),
        "updated_at": rfc3339(app.updated_at),
        "disabled": app.disabled_at is not None,
        "disabled_at": rfc3339(app.disabled_at),
        "client_type": app.client_type,
        "registration": app.registration,
        "application_type": app.application_type or "web",
        **asdict(app.branding),
        **asdict(app.openid),
        "post_logout_redirect_uris": list(app.openid.post_logout_redirect_uris),
        "token_endpoint_auth_method": app.openid.auth_method(app.client_type),
        "jwks": json.loads(app.openid.jwks) if app.openid.jwks else None,
    }


def key_data(key: apps.Key) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "created_at": rfc3339(key.created_at),
        "last_used_at": rfc3339(key.last_used_at),
        "revoked": key.revoked_at is not None,
        "revoked_at": rfc3339(key.revoked_at),
    }


def created_key_data(key: apps.CreatedKey) -> dict[str, object]:
    return {"key_id": key.key_id, "key_secret": key.key_secret, "created_at": rfc3339(key.created_at)}


async def create_app(body: AppCreate, user: User, ctx: Ctx, address: Address) -> Response:
    name, permissions = names_of(ctx, body)
    if name is None:
        raise InvalidRequest("name (or client_name) is required.", field="name")
    if permissions is None:
        raise InvalidRequest("permissions (or scope) is required.", field="permissions")
    columns = None
    if body.application_type is not None:
        try:
            parsed = [urlsplit(uri) for uri in body.redirect_uris]
            columns = {"application_type": registration.application_type_of(body.application_type, parsed)}
        except ValueError:
            raise InvalidRequest("redirect_uris: an item is not a valid URI.", field="redirect_uris") from None
        except GrantdError as exc:
            field = "redirect_uris" if isinstance(exc, InvalidRedirectUri) else "application_type"
            raise InvalidRequest(exc.message, field=field) from None
    created = await apps.create(
        ctx, user.user_id, name, body.redirect_uris, permissions, body.client_type,
        brand=branding_of(body), openid=openid_of(body), address=address, registration=columns,
    )
    return envelope({**app_data(created.app), "app_key": created.app_key}, no_store=True)


async def list_apps(user: User, ctx: Ctx) -> Response:
    return envelope({"apps": [app_data(app) for app in await apps.list_owned(ctx, user.user_id)]})


async def get_app(app_id: AppId, user: User, ctx: Ctx) -> Response:
    return envelope(app_data(await apps.get_owned(ctx, user.user_id, app_id)))


async def update_app(app_id: AppId, body: AppUpdate, user: User, ctx: Ctx, address: Address) -> Response:
    name, permissions = names_of(ctx, body)
    app = await apps.update(
        ctx,
        user.user_id,
        app_id,
        name=name,
        uris=body.redirect_uris,
        permissions=permissions,
        brand=branding_of(body),
        openid=openid_of(body),
        address=address,
    )
    return envelope(app_data(app))


async def disable_app(app_id: AppId, user: User, ctx: Ctx, address: Address) -> Response:
    return envelope(app_data(await apps.disable(ctx, user.user_id, app_id, address=address)))


async def create_key(app_id: AppId, user: User, ctx: Ctx, address: Address) -> Response:
    return envelope(
        created_key_data(await apps.create_key(ctx, user.user_id, app_id, address=address)), no_store=True
    )


async def list_keys(app_id: AppId, user: User, ctx: Ctx) -> Response:
    return envelope({"keys": [key_data(key) for key in await apps.list_keys(ctx, user.user_id, app_id)]})


async def revoke_key(app_id: AppId, key_id: KeyId, user: User, ctx: Ctx, address: Address) -> Response:
    return envelope(key_data(await apps.revoke_key(ctx, user.user_id, app_id, key_id, address=address)))
