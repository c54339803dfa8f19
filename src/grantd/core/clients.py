"""What a client is: an app of one of two types (RFC 6749 §2.1), its OpenID Connect settings, and the
caller proven to be one.

How a caller proves it is a client is ``grantd.core.client_auth``'s.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit
from typing import Any, NamedTuple

CONFIDENTIAL = "confidential"
PUBLIC = "public"
CLIENT_TYPES = (CONFIDENTIAL, PUBLIC)


class Client(NamedTuple):
    """The authenticated caller (immutable; a NamedTuple, which costs a request far less to build
    than a frozen dataclass)."""

    app_id: str
    key_id: str | None  # None for a public client
    # The app's permissions as read with its key (a live key of a live app), so that the
    # client_credentials grant needs no second read; None when not read.
    app_permissions: str | None = None
    # Proven by a signed assertion (RFC 7523 private_key_jwt): a confidential client without a key.
    by_assertion: bool = False
    # RFC 9449: the JWK thumbprint of the key the request's DPoP proof was signed with (what the
    # tokens it gets are bound to), and whether the app requires one (OpenIDSettings.dpop_required).
    dpop_jkt: str | None = None
    dpop_required: bool = False
    # Whether a refresh answers a new refresh token (``OpenIDSettings.rotates_refresh_tokens``), read
    # with the client's authentication.
    rotates_refresh_tokens: bool = True

    @property
    def is_public(self) -> bool:
        return self.key_id is None and not self.by_assertion


# RFC 7591 §2 token_endpoint_auth_method values: a confidential client's, then a public one's.
CLIENT_SECRET_BASIC = "client_secret_basic"
CLIENT_SECRET_POST = "client_secret_post"
PRIVATE_KEY_JWT = "private_key_jwt"
TOKEN_AUTH_NONE = "none"
CONFIDENTIAL_AUTH_METHODS = (CLIENT_SECRET_BASIC, CLIENT_SECRET_POST, PRIVATE_KEY_JWT)
AUTH_METHODS = (*CONFIDENTIAL_AUTH_METHODS, TOKEN_AUTH_NONE)

# grantd's own ``security_profile`` values: none, or FAPI 2.0 (the FAPI 2.0 Security Profile's rules
# enforced for the app whatever its other settings say; see ``OpenIDSettings.fapi2``).
NO_PROFILE = "none"
FAPI2 = "fapi2"
SECURITY_PROFILES = (NO_PROFILE, FAPI2)
# FAPI 2.0 Security Profile §5.3.2.1: an authorization code lives at most this long.
FAPI2_CODE_TTL = 60

ID_TOKEN_ALGORITHMS = ("RS256", "ES256")  # the first is the default (OpenID Connect Discovery 1.0 §3)
SUBJECT_TYPES = ("public", "pairwise")


@dataclass(frozen=True, slots=True)
class OpenIDSettings:
    """An app's OpenID Connect settings, named as OpenID Connect Dynamic Client Registration 1.0 §2
    names them (and RFC 7591 the rest), with their defaults when not set."""

    post_logout_redirect_uris: tuple[str, ...] = ()  # exact URIs (RP-Initiated Logout 1.0 §3.1)
    id_token_signed_response_alg: str = ID_TOKEN_ALGORITHMS[0]
    subject_type: str = "public"
    sector_identifier_uri: str | None = None  # pairwise subjects: the host of this URI is the sector
    require_nonce: bool = False  # grantd's own: an OpenID request without a nonce is refused
    # RFC 9126 §6: only pushed authorization requests (a request_uri of /oauth2/par) are accepted
    require_pushed_authorization_requests: bool = False
    # How the app authenticates at the token, revocation and introspection endpoints (RFC 7591 §2):
    # None derives it from the client type (``auth_method``). private_key_jwt (RFC 7523) takes the
    # app's public keys from ``jwks`` (a JWK Set, as compact JSON text) or ``jwks_uri``.
    token_endpoint_auth_method: str | None = None
    jwks: str | None = None
    jwks_uri: str | None = None
    # RFC 9449 §5.2: the app's token requests must carry a DPoP proof (its tokens are all bound).
    dpop_bound_access_tokens: bool = False
    # grantd's own (no RFC 7591 name): "fapi2" enforces the FAPI 2.0 Security Profile (``fapi2``).
    security_profile: str = NO_PROFILE
    # grantd's own: whether a refresh answers a new refresh token and retires the one presented
    # (RFC 9700 §4.14.2), or the same one again (``rotates_refresh_tokens``).
    refresh_token_rotation: bool = True

    @classmethod
    def of(cls, row: Any) -> OpenIDSettings:
        """The settings of an app's row (NULL columns: the defaults)."""
        uris = row.post_logout_redirect_uris
        return cls(
            post_logout_redirect_uris=tuple(json.loads(uris)) if uris else (),
            id_token_signed_response_alg=row.id_token_signed_response_alg or ID_TOKEN_ALGORITHMS[0],
            subject_type=row.subject_type or "public",
            sector_identifier_uri=row.sector_identifier_uri,
            require_nonce=bool(row.require_nonce),
            require_pushed_authorization_requests=bool(row.require_pushed_authorization_requests),
            token_endpoint_auth_method=row.token_endpoint_auth_method,
            jwks=row.jwks,
            jwks_uri=row.jwks_uri,
            dpop_bound_access_tokens=bool(row.dpop_bound_access_tokens),
            security_profile=row.security_profile or NO_PROFILE,
            refresh_token_rotation=row.refresh_token_rotation is None or bool(row.refresh_token_rotation),
        )

    @property
    def fapi2(self) -> bool:
        """Whether the app is under the FAPI 2.0 Security Profile. Each of its rules is where the rule
        it tightens lives: pushed requests only (``authorization.pushed_only``), each naming its
        ``redirect_uri`` (``par.push``), PKCE S256 required (``pkce.check_challenge``), codes of at
        most ``FAPI2_CODE_TTL`` seconds
        (``authorization.code_ttl``), an assertion's ``aud`` the issuer alone
        (``client_auth.PrivateKeyJwt``), refresh tokens not rotated (``rotates_refresh_tokens``),
        a DPoP proof with every token request, so only DPoP-bound tokens (``dpop_required``). Saving such an
        app needs a confidential client with private_key_jwt and its keys (``core.apps``)."""
        return self.security_profile == FAPI2

    @property
    def rotates_refresh_tokens(self) -> bool:
        """Whether a refresh rotates the refresh token: the app's ``refresh_token_rotation``, never
        under FAPI 2.0 (its Security Profile §5.3.2.1 asks not to rotate)."""
        return rotates_refresh_tokens(self.refresh_token_rotation, self.security_profile)

    @property
    def dpop_required(self) -> bool:
        """Whether the app's token requests must carry a DPoP proof (RFC 9449 §5.2): the one rule,
        which the token endpoint applies (``core.access_token.row``): the app's
        ``dpop_bound_access_tokens``, and always under FAPI 2.0 (sender-constrained tokens)."""
        return self.dpop_bound_access_tokens or self.fapi2

    @staticmethod
    def dpop_required_of(row: Any) -> bool:
        """``dpop_required`` for a row holding only the app columns that rule reads (a live key's,
        ``store.apps.live_key``), without building the whole settings."""
        return _dpop_settings(bool(row.dpop_bound_access_tokens), row.security_profile or NO_PROFILE).dpop_required

    def auth_method(self, client_type: str) -> str:
        """The method the app authenticates by: the registered one, else ``none`` for a public
        client and ``client_secret_basic`` (or, alike, ``client_secret_post``) for a confidential one."""
        return self.token_endpoint_auth_method or (TOKEN_AUTH_NONE if client_type == PUBLIC else CLIENT_SECRET_BASIC)

    def sector(self, uris: Sequence[str]) -> str | None:
        """The sector of pairwise subjects (OpenID Connect Core 1.0 §8.1): the host of
        ``sector_identifier_uri`` when set, else the one host of the app's redirect ``uris``
        (None when they have several: the settings' rules then require a sector_identifier_uri)."""
        if self.sector_identifier_uri:
            return urlsplit(self.sector_identifier_uri).hostname
        hosts = redirect_hosts(uris)
        return next(iter(hosts)) if len(hosts) == 1 else None


def rotates_refresh_tokens(refresh_token_rotation: bool | None, security_profile: str | None) -> bool:
    """The rule of ``OpenIDSettings.rotates_refresh_tokens`` on the two settings as stored (NULL:
    the default), for a read that has the columns without the whole app (``store.apps.live_key``)."""
    return (refresh_token_rotation is None or bool(refresh_token_rotation)) and security_profile != FAPI2


@functools.lru_cache(maxsize=16)
def _dpop_settings(dpop_bound_access_tokens: bool, security_profile: str) -> OpenIDSettings:
    """The settings of the columns ``OpenIDSettings.dpop_required`` reads (the others' defaults),
    kept per value so that a token request builds none."""
    return OpenIDSettings(dpop_bound_access_tokens=dpop_bound_access_tokens, security_profile=security_profile)


def redirect_hosts(uris: Sequence[str]) -> set[str]:
    """The hosts of redirect URIs, in lower case, as OpenID Connect Core 1.0 §8.1 counts them for
    a pairwise sector; a URI without a host (a private-use scheme's, ``com.example.app:/cb``)
    counts as its scheme."""
    hosts = set()
    for uri in uris:
        parts = urlsplit(uri)
        hosts.add(parts.hostname or parts.scheme.lower())
    return hosts
