"""Apps and their keys, managed by the developer who owns them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields as dataclass_fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from grantd.core import audit, jwks
from grantd.core import permissions as perms
from grantd.core import redirect_uris
from grantd.core.clients import (
    AUTH_METHODS,
    CLIENT_TYPES,
    CONFIDENTIAL,
    PRIVATE_KEY_JWT,
    PUBLIC,
    TOKEN_AUTH_NONE,
    FAPI2,
    ID_TOKEN_ALGORITHMS,
    SECURITY_PROFILES,
    SUBJECT_TYPES,
    OpenIDSettings,
    redirect_hosts,
)
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest, NotFound
from grantd.crypto.secrets import new_app_key, new_key_id, new_key_secret, new_uuid
from grantd.store import apps as store

MAX_REDIRECT_URIS = 20
NAME_MAX_LENGTH = 200

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Branding:
    """What an app shows of itself on the hosted pages (and in the v2 client-info); None: not set.

    Named as RFC 7591 §2 names client metadata where it has a name. Every value has passed
    ``check_branding``: the URLs are absolute https (http only on a loopback host, as for
    redirect URIs), the colour is ``#rgb`` or ``#rrggbb`` and nothing else.
    """

    logo_uri: str | None = None  # the app's logo or icon
    client_uri: str | None = None  # its website
    tos_uri: str | None = None  # its terms of service
    policy_uri: str | None = None  # its privacy policy
    description: str | None = None
    domain: str | None = None  # a host name, as the developer states it (not verified)
    accent_color: str | None = None  # "#rgb" or "#rrggbb", lower case
    theme: str | None = None  # "light" or "dark"

    @classmethod
    def of(cls, row: Any) -> Branding:
        """The branding of an app's row (any object with the ``BRANDING_FIELDS`` as attributes)."""
        return cls(**{name: getattr(row, name, None) for name in BRANDING_FIELDS})


BRANDING_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(Branding))
assert BRANDING_FIELDS == store.BRANDING_COLUMNS  # one name per setting, from the wire to the column


OPENID_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(OpenIDSettings))
assert OPENID_FIELDS == store.OPENID_COLUMNS
OPENID_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclass_fields(OpenIDSettings)}




@dataclass(frozen=True, slots=True)
class App:
    app_id: str
    name: str
    redirect_uris: list[str]
    permissions: str
    created_at: int
    updated_at: int
    disabled_at: int | None
    client_type: str
    branding: Branding = Branding()
    openid: OpenIDSettings = OpenIDSettings()
    # How it came to be: None (its developer registered it), "initial_access_token" or "open"
    # (RFC 7591, core.registration), "metadata_document" (core.client_metadata); and RFC 7591's
    # application_type (None: web).
    registration: str | None = None
    application_type: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedApp:
    app: App
    app_key: str  # shown once


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key_id: str
    key_secret: str  # shown once
    created_at: int


async def _require_owned(conn, owner_id: str | None, app_id: str):  # type: ignore[no-untyped-def]
    """The app's row when ``owner_id`` owns it (None: the operator, who may see every app); NotFound otherwise."""
    row = await store.owned_one(conn, owner_id, app_id)
    if row is None:
        raise NotFound("App not found.")
    return row


def _app(row) -> App:  # type: ignore[no-untyped-def]
    return App(
        app_id=row.id,
        name=row.name,
        redirect_uris=store.redirect_uris_of(row),
        permissions=row.permissions,
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_at=row.disabled_at,
        client_type=row.client_type,
        branding=Branding.of(row),
        openid=OpenIDSettings.of(row),
        registration=row.registration,
        application_type=row.application_type,
    )


class _Fields:
    """Checks each field of a request on its own, so that a form can show every bad field at once.

    ``done()`` raises the first error found, unchanged (its type and message are what the JSON
    API answers), with ``fields``: each bad field's name -> its message, in the order checked.
    """

    def __init__(self) -> None:
        self.errors: dict[str, GrantdError] = {}

    def check(self, field: str, rule: Callable[[], T]) -> T | None:
        try:
            return rule()
        except GrantdError as exc:
            self.errors.setdefault(field, exc)
            return None

    def done(self) -> None:
        if self.errors:
            first = next(iter(self.errors.values()))
            first.fields = {field: exc.message for field, exc in self.errors.items()}  # type: ignore[attr-defined]
            raise first


# For the other use cases about an app that check a form of it field by field (core.trial).
Fields = _Fields


def field_errors(exc: GrantdError) -> dict[str, str]:
    """The bad fields of a create or update refused with ``exc``: field name -> message (empty if none is known)."""
    return dict(getattr(exc, "fields", {}))


def _client_type(client_type: str) -> str:
    if client_type not in CLIENT_TYPES:
        raise InvalidRequest(f"client_type must be one of: {', '.join(CLIENT_TYPES)}.")
    return client_type


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX_LENGTH or not name.isprintable():
        raise InvalidRequest(f"name must be 1 to {NAME_MAX_LENGTH} printable characters.")
    return name


def _redirect_uris(uris: Sequence[str]) -> list[str]:
    if not uris:
        raise InvalidRequest("redirect_uris must list at least one URI.")
    if len(uris) > MAX_REDIRECT_URIS:
        raise InvalidRequest(f"redirect_uris may list at most {MAX_REDIRECT_URIS} URIs.")
    return list(dict.fromkeys(redirect_uris.validate(uri) for uri in uris))


def _permissions(ctx: Context, value: str) -> str:
    if not value.strip():
        raise InvalidRequest("permissions must name at least one permission.")
    names = perms.parse(value)
    ctx.catalog.require_known(names)
    return perms.join(names)


# ---------------------------------------------------------------- branding: the rules

BRANDING_URI_MAX_LENGTH = 2048
DESCRIPTION_MAX_LENGTH = 500
DOMAIN_MAX_LENGTH = 253
THEMES = ("light", "dark")
# A DNS name or an IPv4 address in lower case, as a URL's host is read (and as a CSP source
# can name it: web.pages builds the logo's img-src and the forms' form-action from it).
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_COLOR = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")
# What no URL shown on a page may hold, as for redirect URIs: white space, control characters, and
# the characters a URL must percent-encode (among them the quote and angle brackets of HTML).
_URI_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f<>\"\\^`{|}]")


def _hostname(host: str) -> bool:
    return len(host) <= DOMAIN_MAX_LENGTH and HOSTNAME.fullmatch(host) is not None and all(
        len(label) <= 63 for label in host.split(".")
    )


def _branding_uri(field: str, value: str) -> str:
    """An absolute https URL (http only on a loopback host, as ``redirect_uris.validate`` allows),
    without user information; the logo's host must also be nameable as a CSP source."""
    if len(value) > BRANDING_URI_MAX_LENGTH:
        raise InvalidRequest(f"{field} must be at most {BRANDING_URI_MAX_LENGTH} characters.", field=field)
    if not value.isascii() or _URI_FORBIDDEN.search(value):
        raise InvalidRequest(
            f"{field} may not contain white space, control characters, quotes, angle brackets or other characters "
            "a URL must percent-encode.",
            field=field,
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidRequest(f"{field} is not a valid URL.", field=field) from None
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"{field} may not carry user information.", field=field)
    scheme = parts.scheme.lower()
    if not (scheme == "https" and host) and not (scheme == "http" and host in redirect_uris.LOOPBACK_HOSTS):
        raise InvalidRequest(
            f"{field} must be an absolute https URL (http only on localhost, 127.0.0.1 or [::1]).", field=field
        )
    if field == "logo_uri" and not _hostname(host):
        raise InvalidRequest(
            "logo_uri's host must be a DNS name or an IPv4 address: the hosted pages allow images from that one "
            "host, and no other kind of host can be named in their Content-Security-Policy.",
            field=field,
        )
    return value


def _description(value: str) -> str:
    if len(value) > DESCRIPTION_MAX_LENGTH or not value.isprintable():
        raise InvalidRequest(
            f"description must be at most {DESCRIPTION_MAX_LENGTH} printable characters, on one line.",
            field="description",
        )
    return value


def _domain(value: str) -> str:
    host = value.lower()
    if not _hostname(host):
        raise InvalidRequest(
            "domain must be a host name such as app.example.com: letters, digits, hyphens and dots; "
            "no scheme, port or path.",
            field="domain",
        )
    return host


def accent_color(value: str) -> str:
    """``#rgb`` or ``#rrggbb`` in lower case: a colour and nothing else, so it can be written into CSS."""
    color = value.lower()
    if _COLOR.fullmatch(color) is None:
        raise InvalidRequest("accent_color must be a colour written #rgb or #rrggbb, such as #0b5cad.", field="accent_color")
    return color


def _theme(value: str) -> str:
    if value not in THEMES:
        raise InvalidRequest(f"theme must be one of: {', '.join(THEMES)}.", field="theme")
    return value


_BRANDING_RULES: dict[str, Callable[[str], str]] = {
    **{name: (lambda value, name=name: _branding_uri(name, value)) for name in ("logo_uri", "client_uri", "tos_uri", "policy_uri")},
    "description": _description,
    "domain": _domain,
    "accent_color": accent_color,
    "theme": _theme,
}
assert tuple(_BRANDING_RULES) == BRANDING_FIELDS


def _branding(fields: _Fields, given: Mapping[str, str | None]) -> dict[str, str | None]:
    """The branding settings ``given`` (None: leave it as it is), each checked on its own by ``fields``:
    the value to store, trimmed and normalised; an empty value is None, which removes the setting."""
    unknown = set(given) - set(BRANDING_FIELDS)
    if unknown:
        raise ValueError(f"not a branding setting: {sorted(unknown)}")
    checked: dict[str, str | None] = {}
    for name, value in given.items():
        if value is not None:
            trimmed = value.strip()
            checked[name] = fields.check(name, lambda rule=_BRANDING_RULES[name], v=trimmed: rule(v) if v else None)
    return checked


def check_branding(given: Mapping[str, str | None]) -> dict[str, str | None]:
    """``given`` as it would be stored; InvalidRequest (with ``field``) for the first bad setting,
    every bad one in ``field_errors``."""
    fields = _Fields()
    checked = _branding(fields, given)
    fields.done()
    return checked


# ---------------------------------------------------------------- OpenID Connect settings: the rules


def _post_logout_redirect_uris(value: Any) -> tuple[str, ...]:
    """Exact URIs, by the rules of redirect URIs (RP-Initiated Logout 1.0 §3.1): at most as many."""
    field = "post_logout_redirect_uris"
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(uri, str) for uri in value):
        raise InvalidRequest(f"{field} must be a list of URIs.", field=field)
    if len(value) > MAX_REDIRECT_URIS:
        raise InvalidRequest(f"{field} may list at most {MAX_REDIRECT_URIS} URIs.", field=field)
    return tuple(dict.fromkeys(redirect_uris.validate(uri, field) for uri in value))


def _one_of(field: str, choices: Sequence[str]) -> Callable[[Any], str]:
    def rule(value: Any) -> str:
        if value not in choices:
            raise InvalidRequest(f"{field} must be one of: {', '.join(choices)}.", field=field)
        return value

    return rule


def _boolean(field: str) -> Callable[[Any], bool]:
    def rule(value: Any) -> bool:
        if not isinstance(value, bool):
            raise InvalidRequest(f"{field} must be true or false.", field=field)
        return value

    return rule


_OPENID_RULES: dict[str, Callable[[Any], Any]] = {
    "post_logout_redirect_uris": _post_logout_redirect_uris,
    "id_token_signed_response_alg": _one_of("id_token_signed_response_alg", ID_TOKEN_ALGORITHMS),
    "subject_type": _one_of("subject_type", SUBJECT_TYPES),
    # Only its host is used (the pairwise sector): the document it names is not fetched.
    "sector_identifier_uri": lambda value: _branding_uri("sector_identifier_uri", value),
    "require_nonce": _boolean("require_nonce"),
    "require_pushed_authorization_requests": _boolean("require_pushed_authorization_requests"),
    "token_endpoint_auth_method": _one_of("token_endpoint_auth_method", AUTH_METHODS),
    "jwks": jwks.check_jwks,
    # Fetched when an assertion is checked (core.jwks: public addresses only, unless the operator allows more).
    "jwks_uri": lambda value: _branding_uri("jwks_uri", value),
    "dpop_bound_access_tokens": _boolean("dpop_bound_access_tokens"),
    "security_profile": _one_of("security_profile", SECURITY_PROFILES),
    "refresh_token_rotation": _boolean("refresh_token_rotation"),
}
assert tuple(_OPENID_RULES) == OPENID_FIELDS


def _openid(fields: _Fields, given: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenID Connect settings ``given`` (None: leave it as it is), each checked on its own by
    ``fields``: the value as ``OpenIDSettings`` holds it. An empty value ("" or []) is the
    setting's default, which clears it (as false does for require_nonce)."""
    unknown = set(given) - set(OPENID_FIELDS)
    if unknown:
        raise ValueError(f"not an OpenID Connect setting: {sorted(unknown)}")
    checked: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if isinstance(value, str):
            value = value.strip()
        if isinstance(value, (str, list, tuple, dict)) and not value:
            checked[name] = OPENID_DEFAULTS[name]
        else:
            checked[name] = fields.check(name, lambda rule=_OPENID_RULES[name], v=value: rule(v))
    return checked


def _sector_rule(fields: _Fields, uris: Sequence[str] | None, settings: Mapping[str, Any]) -> None:
    """Pairwise subjects for redirect URIs on more than one host need a ``sector_identifier_uri``
    (OpenID Connect Core 1.0 §8.1): without one, the sector of the subjects is ambiguous."""
    if uris is None or {"subject_type", "sector_identifier_uri"} & set(fields.errors):
        return  # a field it depends on is refused already
    if settings["subject_type"] == "pairwise" and not settings["sector_identifier_uri"] and len(redirect_hosts(uris)) > 1:
        fields.errors.setdefault("sector_identifier_uri", InvalidRequest(
            "sector_identifier_uri is required when subject_type is pairwise and the redirect_uris are on more "
            "than one host (OpenID Connect Core 1.0 §8.1): its host names the sector of the app's subjects.",
            field="sector_identifier_uri",
        ))


def _auth_method_rule(fields: _Fields, client_type: str | None, settings: Mapping[str, Any]) -> None:
    """The registered ``token_endpoint_auth_method`` must suit the client type (a public client
    authenticates by none, a confidential one never), and private_key_jwt needs the app's public
    keys: ``jwks`` or ``jwks_uri``, not both (RFC 7591 §2)."""
    if {"token_endpoint_auth_method", "jwks", "jwks_uri", "client_type"} & set(fields.errors):
        return  # a field it depends on is refused already
    method = settings["token_endpoint_auth_method"]
    field = "token_endpoint_auth_method"
    if client_type == PUBLIC and method not in (None, TOKEN_AUTH_NONE):
        fields.errors.setdefault(field, InvalidRequest(f"{field} of a public client can only be none.", field=field))
    elif client_type != PUBLIC and method == TOKEN_AUTH_NONE:
        fields.errors.setdefault(field, InvalidRequest(f"{field} of a confidential client cannot be none.", field=field))
    elif settings["jwks"] and settings["jwks_uri"]:
        fields.errors.setdefault("jwks_uri", InvalidRequest("Set jwks or jwks_uri, not both (RFC 7591 §2).", field="jwks_uri"))
    elif method == PRIVATE_KEY_JWT and not (settings["jwks"] or settings["jwks_uri"]):
        fields.errors.setdefault("jwks", InvalidRequest(
            "private_key_jwt needs the app's public keys: jwks (a JWK Set) or jwks_uri.", field="jwks"
        ))


def _profile_rule(fields: _Fields, client_type: str | None, settings: Mapping[str, Any]) -> None:
    """The FAPI 2.0 profile (its Security Profile §5.3.2.1) needs a confidential client that
    authenticates by private_key_jwt, with its keys (``jwks`` or ``jwks_uri``)."""
    if settings["security_profile"] != FAPI2 or set(fields.errors) & {
        "security_profile", "client_type", "token_endpoint_auth_method", "jwks", "jwks_uri"
    }:
        return  # not asked for, or a field it depends on is refused already
    field = "security_profile"
    if client_type == PUBLIC:
        message = "security_profile fapi2 needs a confidential client: a public client cannot use it."
    elif settings["token_endpoint_auth_method"] != PRIVATE_KEY_JWT:
        message = "security_profile fapi2 needs token_endpoint_auth_method private_key_jwt, with jwks or jwks_uri."
    elif not (settings["jwks"] or settings["jwks_uri"]):
        message = "security_profile fapi2 needs the app's public keys: jwks or jwks_uri."
    else:
        return
    fields.errors.setdefault(field, InvalidRequest(message, field=field))


def _rotation_rule(fields: _Fields, client_type: str | None, settings: Mapping[str, Any]) -> None:
    """A public client's refresh tokens rotate (RFC 9700 §4.14.2: a public client's refresh tokens
    are sender-constrained or rotated, and grantd does not bind them to a public client)."""
    field = "refresh_token_rotation"
    if client_type == PUBLIC and settings[field] is False and field not in fields.errors:
        fields.errors.setdefault(field, InvalidRequest(
            "refresh_token_rotation can be false only for a confidential client: a public client's refresh "
            "tokens rotate (RFC 9700 §4.14.2).", field=field,
        ))


def check_openid(given: Mapping[str, Any], uris: Sequence[str] = ()) -> dict[str, Any]:
    """``given`` as ``OpenIDSettings`` would hold it, for an app with the redirect ``uris``;
    InvalidRequest (with ``field``) for the first bad setting, every bad one in ``field_errors``."""
    fields = _Fields()
    checked = _openid(fields, given)
    _sector_rule(fields, uris, {**OPENID_DEFAULTS, **checked})
    fields.done()
    return checked


def _openid_columns(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of some OpenID Connect settings: a default is NULL (the migration's meaning),
    so there is one way to store each value."""
    return {name: None if value == OPENID_DEFAULTS[name] else value for name, value in settings.items()}


def branding(app_row: Any) -> dict[str, Any]:
    """The branding of an app in the shape of the v2 ``GET /oauth/client-info`` answer (the Neucron
    SDK 2.2.3): ``app_icon``, ``app_domain``, ``description``, ``website_url``,
    ``terms_and_conditions``, ``privacy_policy`` and ``branding: {accent_color, theme, logo_url}``.

    ``app_row``: a row of ``apps`` (``store.apps.live``, ``owned_one``), an ``App`` or a ``Branding``.
    A setting that is not set is left out, never null (the SDK's zod ``.optional()`` refuses null);
    so is ``branding`` when none of its keys is set.
    """
    shown = app_row.branding if isinstance(app_row, App) else Branding.of(app_row)

    def present(pairs: tuple[tuple[str, str | None], ...]) -> dict[str, Any]:
        return {key: value for key, value in pairs if value is not None}

    answer = present((
        ("app_icon", shown.logo_uri),
        ("app_domain", shown.domain),
        ("description", shown.description),
        ("website_url", shown.client_uri),
        ("terms_and_conditions", shown.tos_uri),
        ("privacy_policy", shown.policy_uri),
    ))
    look = present((("accent_color", shown.accent_color), ("theme", shown.theme), ("logo_url", shown.logo_uri)))
    if look:
        answer["branding"] = look
    return answer


def accent_text_color(color: str) -> str:
    """Black or white, whichever reads better on ``color`` (``#rgb`` or ``#rrggbb``): the text of a
    button in the app's accent colour (WCAG 2.x relative luminance; the larger contrast ratio wins)."""
    digits = accent_color(color)[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)

    def linear(channel: str) -> float:
        c = int(channel, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(digits[i : i + 2]) for i in (0, 2, 4))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # contrast with black (L + 0.05) / 0.05 against contrast with white 1.05 / (L + 0.05)
    return "#000000" if (luminance + 0.05) ** 2 > 0.05 * 1.05 else "#ffffff"


async def branding_of(ctx: Context, app_id: str) -> Branding:
    """The branding of a live app, for the pages that sign in to it or ask consent for it (none for
    an unknown or disabled app)."""
    async with ctx.db.read() as conn:
        row = await store.live(conn, app_id)
    return Branding() if row is None else Branding.of(row)


@dataclass(frozen=True, slots=True)
class CheckedApp:
    """An app's settings as they would be stored, every rule passed (``check_app``)."""

    name: str
    redirect_uris: list[str]
    permissions: str
    client_type: str
    branding: dict[str, str]  # the settings set
    openid: dict[str, Any]  # every OpenID Connect setting, defaults included

    def columns(self) -> dict[str, Any]:
        """The ``apps`` columns of these settings (store.apps.insert_app's and its ``save_*``)."""
        return {
            "name": self.name,
            "redirect_uris": self.redirect_uris,
            "permissions": self.permissions,
            "client_type": self.client_type,
            **{name: self.branding.get(name) for name in BRANDING_FIELDS},
            **_openid_columns(self.openid),
        }


def check_app(
    ctx: Context,
    name: str,
    uris: Sequence[str],
    permissions: str,
    client_type: str = CONFIDENTIAL,
    *,
    brand: Mapping[str, str | None] | None = None,
    openid: Mapping[str, Any] | None = None,
) -> CheckedApp:
    """The rules of a new app, one place for every way an app is registered (``/v1/apps``, the
    console, the CLI, RFC 7591 registration, a client ID metadata document): InvalidRequest (with
    ``field``) for the first bad setting, every bad one in ``field_errors``."""
    fields = _Fields()
    fields.check("client_type", lambda: _client_type(client_type))
    name_ = fields.check("name", lambda: _name(name))
    uris_ = fields.check("redirect_uris", lambda: _redirect_uris(uris))
    permissions_ = fields.check("permissions", lambda: _permissions(ctx, permissions))
    look = {name: value for name, value in _branding(fields, brand or {}).items() if value is not None}
    settings = {**OPENID_DEFAULTS, **_openid(fields, openid or {})}
    _sector_rule(fields, uris_, settings)
    _auth_method_rule(fields, client_type, settings)
    _profile_rule(fields, client_type, settings)
    _rotation_rule(fields, client_type, settings)
    fields.done()
    assert name_ is not None and uris_ is not None and permissions_ is not None  # else done() raised
    return CheckedApp(name_, uris_, permissions_, client_type, look, settings)


async def create(
    ctx: Context,
    owner_id: str,
    name: str,
    uris: Sequence[str],
    permissions: str,
    client_type: str = CONFIDENTIAL,
    *,
    brand: Mapping[str, str | None] | None = None,
    openid: Mapping[str, Any] | None = None,
    address: str | None = None,
    operator: bool = False,
    registration: Mapping[str, Any] | None = None,
) -> CreatedApp:
    """Register an app. A public client (a browser or native app) cannot keep a secret: PKCE is required for it.

    ``brand``: some of ``BRANDING_FIELDS`` and their values (None or empty: not set).
    ``openid``: some of ``OPENID_FIELDS`` and their values (None or empty: the default).
    ``registration``: the columns of a dynamic registration (core.registration), written with it.
    """
    checked = check_app(ctx, name, uris, permissions, client_type, brand=brand, openid=openid)
    name, uris_, permissions_, look, settings = (
        checked.name, checked.redirect_uris, checked.permissions, checked.branding, checked.openid
    )
    app_id, app_key, now = new_uuid(), new_app_key(), ctx.now()
    async with ctx.db.write() as tx:
        await store.insert_app(
            tx,
            app_id=app_id,
            owner_id=owner_id,
            name=name,
            redirect_uris=uris_,
            permissions=permissions_,
            app_key_hash=ctx.hasher.hash(app_key),
            client_type=client_type,
            now=now,
            branding=look,
            openid=_openid_columns(settings),
            registration=registration,
        )
        actor = audit.OPERATOR if operator else owner_id if owner_id != store.SELF_REGISTERED else audit.ANONYMOUS
        await audit.record(
            ctx, tx, "app_created", actor=actor, user_id=owner_id, app_id=app_id,
            address=address, now=now, client_type=client_type, permissions=perms.parse(permissions_),
        )
    app = App(
        app_id, name, uris_, permissions_, now, now, None, client_type, Branding(**look), OpenIDSettings(**settings),
        (registration or {}).get("registration"), (registration or {}).get("application_type"),
    )
    return CreatedApp(app, app_key)


async def list_owned(ctx: Context, owner_id: str) -> list[App]:
    async with ctx.db.read() as conn:
        return [_app(row) for row in await store.owned(conn, owner_id)]


async def get_owned(ctx: Context, owner_id: str | None, app_id: str) -> App:
    async with ctx.db.read() as conn:
        return _app(await _require_owned(conn, owner_id, app_id))


async def update(
    ctx: Context,
    owner_id: str | None,
    app_id: str,
    *,
    name: str | None = None,
    uris: Sequence[str] | None = None,
    permissions: str | None = None,
    brand: Mapping[str, str | None] | None = None,
    openid: Mapping[str, Any] | None = None,
    address: str | None = None,
) -> App:
    """Change what is given (None: leave it). ``brand``: some of ``BRANDING_FIELDS``; an empty
    value removes that setting. ``openid``: some of ``OPENID_FIELDS``; an empty value ("", [],
    false) sets it back to its default. Only what really changes is written, and audited by name."""
    values: dict[str, object] = {}
    fields = _Fields()
    if name is not None:
        values["name"] = fields.check("name", lambda: _name(name))
    if uris is not None:
        values["redirect_uris"] = fields.check("redirect_uris", lambda: _redirect_uris(uris))
    if permissions is not None:
        values["permissions"] = fields.check("permissions", lambda: _permissions(ctx, permissions))
    values.update(_branding(fields, brand or {}))
    settings = _openid(fields, openid or {})
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await _require_owned(tx, owner_id, app_id)
        current = {**row._mapping, "redirect_uris": store.redirect_uris_of(row), **asdict(OpenIDSettings.of(row))}
        # A rule across settings, with what the app will have: what is given, else what it has;
        # then every bad field at once (the caller's app first: another's is NotFound).
        _sector_rule(fields, values.get("redirect_uris", current["redirect_uris"]), {**current, **settings})
        _auth_method_rule(fields, row.client_type, {**current, **settings})
        _profile_rule(fields, row.client_type, {**current, **settings})
        _rotation_rule(fields, row.client_type, {**current, **settings})
        fields.done()
        changed = {field: value for field, value in {**values, **settings}.items() if value != current[field]}
        if changed:
            openid_changed = _openid_columns({k: v for k, v in changed.items() if k in OPENID_DEFAULTS})
            await store.update_app(tx, app_id, {**changed, **openid_changed}, now)
            await audit.record(
                ctx, tx, "app_updated", actor=owner_id or audit.OPERATOR, user_id=row.owner_id, app_id=app_id,
                address=address, now=now, fields=sorted(changed),
            )
        return _app(await store.owned_one(tx, owner_id, app_id))


async def disable(
    ctx: Context, owner_id: str | None, app_id: str, *, address: str | None = None, actor: str | None = None
) -> App:
    """Disable an app: its keys and unredeemed codes stop working at once. ``actor``: who is audited
    as doing it, when not the owner (an admin; None and no owner: the operator)."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await _require_owned(tx, owner_id, app_id)
        await store.disable(tx, app_id, now)
        if row.disabled_at is None:
            await audit.record(
                ctx, tx, "app_disabled", actor=actor or owner_id or audit.OPERATOR, user_id=row.owner_id, app_id=app_id,
                address=address, now=now,
            )
        return _app(await store.owned_one(tx, owner_id, app_id))


async def create_key(ctx: Context, owner_id: str | None, app_id: str, *, address: str | None = None) -> CreatedKey:
    key_id = new_key_id()
    key_secret = new_key_secret(key_id)
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await _require_owned(tx, owner_id, app_id)
        if row.disabled_at is not None:
            raise InvalidRequest("The app is disabled; it can hold no new keys.")
        await store.insert_key(tx, key_id=key_id, app_id=app_id, secret_hash=ctx.hasher.hash(key_secret), now=now)
        await audit.record(
            ctx, tx, "key_created", actor=owner_id or audit.OPERATOR, user_id=row.owner_id, app_id=app_id,
            address=address, now=now, key_id=key_id,
        )
    return CreatedKey(key_id, key_secret, now)


async def list_keys(ctx: Context, owner_id: str | None, app_id: str) -> list[Key]:
    async with ctx.db.read() as conn:
        await _require_owned(conn, owner_id, app_id)
        rows = await store.keys_of(conn, app_id)
    return [Key(row.id, row.created_at, row.revoked_at, _last_used(ctx, row)) for row in rows]


def _last_used(ctx: Context, row: Any) -> int | None:
    """A key's last use: its ``last_used_at`` as flushed (``core.key_use``: at most one flush
    interval behind), or this process's newer use not yet flushed."""
    pending = ctx.key_use.pending(row.id)
    if pending is not None and (row.last_used_at is None or pending > row.last_used_at):
        return pending
    return row.last_used_at  # type: ignore[no-any-return]


async def revoke_key(
    ctx: Context, owner_id: str | None, app_id: str, key_id: str, *, address: str | None = None
) -> Key:
    """Revoke a key at once; revoking it again changes nothing."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        app = await _require_owned(tx, owner_id, app_id)
        if not await store.revoke_key(tx, app_id, key_id, now):
            raise NotFound("Key not found.")
        row = next(row for row in await store.keys_of(tx, app_id) if row.id == key_id)
        if row.revoked_at == now:  # revoked by this call, not before
            await audit.record(
                ctx, tx, "key_revoked", actor=owner_id or audit.OPERATOR, user_id=app.owner_id, app_id=app_id,
                address=address, now=now, key_id=key_id,
            )
    return Key(row.id, row.created_at, row.revoked_at, _last_used(ctx, row))
