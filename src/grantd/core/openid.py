"""OpenID Connect Core 1.0: the standard scopes and the claims they release, subjects, ID tokens.

- Scopes (Core §5.4, §11): ``openid``, ``profile``, ``email``, ``phone`` and ``offline_access``
  are every app's to ask for, beside the permissions of the operator's catalog; the consent page
  shows them in words like any permission, and the user's grant remembers them.
- Claims come from the person's profile (``core.profile``), once, for the ID token and the
  UserInfo endpoint alike (``claims_of``).
- Subjects (Core §8): ``public`` is the user's id (stable, never the email); ``pairwise`` an
  HMAC of the sector and the user's id, the same for every app of one sector and unlinkable
  across sectors.
- ID tokens (Core §2, §3.1.3.6): signed with the app's ``id_token_signed_response_alg``
  (RS256 unless the app chose ES256), by the signing keys every process shares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grantd.core.amr import amr_claim
from grantd.core.errors import InvalidRequest
from grantd.core.permissions import STANDARD_SCOPES
from grantd.crypto.jws import ID_TOKEN_TYPE, InvalidSignature

if TYPE_CHECKING:
    from grantd.core.clients import OpenIDSettings
    from grantd.core.context import Context
    from grantd.core.profile import Profile

OPENID = "openid"
OFFLINE_ACCESS = "offline_access"
assert OPENID in STANDARD_SCOPES and OFFLINE_ACCESS in STANDARD_SCOPES
# The standard scopes (``permissions.STANDARD_SCOPES``: the catalog describes them too).
SCOPES = STANDARD_SCOPES
# The claims each scope releases (Core §5.4).
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": ("name", "given_name", "family_name", "preferred_username", "picture", "locale", "updated_at"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number",),
}
# What an ID token may carry besides the scopes' claims (Core §2), for discovery's claims_supported.
ID_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "amr")
CLAIMS_SUPPORTED: tuple[str, ...] = (*ID_TOKEN_CLAIMS, *(c for claims in SCOPE_CLAIMS.values() for c in claims))
NONCE_MAX_LENGTH = 512


def split(requested: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A request's scope, as the standard scopes and the catalog's permissions."""
    standard, permissions = [], []
    for name in requested:
        (standard if name in SCOPES else permissions).append(name)
    return tuple(standard), tuple(permissions)


def is_openid(scope: Iterable[str]) -> bool:
    return OPENID in scope


# ---------------------------------------------------------------- subjects


def _pairwise_key(ctx: Context) -> bytes:
    return hmac.new(ctx.settings.master_secret, b"grantd pairwise subject v1", hashlib.sha256).digest()


def subject(ctx: Context, settings: OpenIDSettings, redirect_uris: Iterable[str], user_id: str) -> str:
    """The ``sub`` the app is shown for the user."""
    if settings.subject_type != "pairwise":
        return user_id
    sector = (settings.sector(tuple(redirect_uris)) or "").lower()
    digest = hmac.new(_pairwise_key(ctx), f"{sector}\x00{user_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Audience:
    """The app an ID token or UserInfo answer is for: its id and what its subject depends on."""

    client_id: str
    settings: OpenIDSettings
    redirect_uris: tuple[str, ...]

    def subject(self, ctx: Context, user_id: str) -> str:
        return subject(ctx, self.settings, self.redirect_uris, user_id)


# ---------------------------------------------------------------- claims


def claims_of(profile: Profile, scope: Iterable[str]) -> dict[str, Any]:
    """The claims the granted ``scope`` releases about the person (Core §5.1, §5.4): only those
    set, never null (Core §5.3.2)."""
    granted = set(scope)
    values: dict[str, Any] = {}
    if "profile" in granted:
        values.update(
            name=profile.full_name,
            given_name=profile.first_name,
            family_name=profile.last_name,
            preferred_username=profile.user_name,
            picture=profile.avatar,
            locale=profile.language,
            updated_at=profile.updated_at,
        )
    if "email" in granted:
        values.update(email=profile.email, email_verified=profile.email_verified)
    if "phone" in granted:
        values["phone_number"] = profile.phone_number
    return {name: value for name, value in values.items() if value is not None}


def _left_hash(token: str) -> str:
    """``at_hash`` (Core §3.1.3.6): the left half of the SHA-256 of the token, base64url (RS256
    and ES256 both hash with SHA-256)."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def id_token(
    ctx: Context,
    audience: Audience,
    *,
    user_id: str,
    auth_time: int | None,
    nonce: str | None,
    access_token: str,
    claims: dict[str, Any],
    now: int,
    amr: str | None = None,
) -> str:
    """An ID token (Core §2) for ``audience``, issued beside ``access_token``; ``claims``: the
    person's claims the grant releases (``claims_of``)."""
    payload: dict[str, Any] = {
        "iss": ctx.settings.issuer,
        "sub": audience.subject(ctx, user_id),
        "aud": audience.client_id,
        "iat": now,
        "exp": now + ctx.settings.id_token_ttl,
    }
    if auth_time is not None:
        payload["auth_time"] = auth_time
        payload["amr"] = amr_claim(amr)  # as stored with the sign-in it dates
    if nonce is not None:
        payload["nonce"] = nonce
    payload["at_hash"] = _left_hash(access_token)
    payload.update(claims)
    return ctx.signing.sign(payload, ID_TOKEN_TYPE, alg=audience.settings.id_token_signed_response_alg)


def hinted_subject(ctx: Context, id_token_hint: str, client_id: str) -> str:
    """The ``sub`` of an ``id_token_hint`` (Core §3.1.2.1; RP-Initiated Logout 1.0 §2): an ID token
    grantd signed for ``client_id`` (None: for any app), expired or not. InvalidRequest otherwise."""
    claims = verified_id_token(ctx, id_token_hint, client_id)
    return claims["sub"]


def verified_id_token(ctx: Context, token: str, client_id: str | None) -> dict[str, Any]:
    """The claims of an ID token grantd signed (for ``client_id``, unless None), expired or not:
    its signature by a published key, its issuer and audience hold. InvalidRequest otherwise."""
    refused = InvalidRequest("id_token_hint is not an ID token this server issued to this app.")
    if len(token) > 8192 or token.count(".") != 2:
        raise refused
    try:
        claims = ctx.signing.verify_id_token(token, issuer=ctx.settings.issuer, audience=client_id, verify_exp=False)
    except InvalidSignature:
        raise refused from None
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("aud"), (str, list)):
        raise refused
    return claims
