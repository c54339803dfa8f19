"""The refresh_token grant (RFC 6749 §6) with rotation (RFC 9700 §4.14.2).

A refresh token is rotated at most once: the successor is written with the rotation or not at
all, and the new access token (which has no row; its jti is the successor's ``access_jti``) is
issued only then (``store.tokens.rotate``, on either database). A rotated token presented again
revokes its whole family, except within the grace window (``refresh_token_grace``), where the
duplicate gets the same successor and the same access token (its jti and iat), re-signed with the
scope and audience it asks for (``_again``). A successful rotation is not
audited (a hot path); a reuse that revokes the family is.

An app whose refresh tokens are not rotated (``OpenIDSettings.rotates_refresh_tokens``: its
``refresh_token_rotation`` off, or the FAPI 2.0 profile) gets a new access token and the same
refresh token, whose lifetime does not change; the token stays usable until it expires or is
revoked. One it rotated before that setting changed is still judged as a reuse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from grantd.core import access_token, audit, dpop, id_tokens, openid, resources
from grantd.core import permissions as perms
from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import Caller, ClientAuthentication, missing
from grantd.core.clients import Client
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant, InvalidScope
from grantd.crypto.secrets import new_token_id
from grantd.store import tokens as token_store
from grantd.store.tokens import Issue

GRANT_TYPE = "refresh_token"
_BAD_REFRESH = "The refresh token is unknown, expired, revoked, or belongs to another app."


def token_request(
    ctx: Context, auth: ClientAuthentication, params: Mapping[str, str], address: str | None
) -> Awaitable[IssuedToken]:
    """``grant_type=refresh_token`` (RFC 6749 §6), ``scope`` narrowing the grant if sent, and
    ``resource`` (RFC 8707) naming one of the grant's resources."""
    refresh_token = params.get("refresh_token")
    if refresh_token is None:
        return missing(ctx, auth, "refresh_token")
    return refresh(ctx, auth, refresh_token, params.get("scope"), address=address, resource=params.get(resources.PARAMETER))


async def refresh(
    ctx: Context, auth: ClientAuthentication, refresh_token: str, scope: str | None = None, *, address: str | None = None,
    resource: str | None = None,
) -> IssuedToken:
    """Rotate ``refresh_token`` (or keep it, for an app that does not rotate) for the client ``auth``
    proves. The client is proven before anything about the token is looked at; on PostgreSQL its
    key is read with the token, in one SELECT. ``resource`` (RFC 8707): the new access token's
    audience, one of the grant's resources; under the ``registered`` policy its registration is
    read before the rotation."""
    successor = ctx.hasher.successor(refresh_token)
    token_hash = ctx.hasher.hash(refresh_token)
    rotation = _Rotation(ctx, auth, scope, successor)
    if resource is not None:
        rotation.resource, rotation.accepted = await resources.named(ctx, rotation, resource)
    try:
        rotated, row = await token_store.rotate(ctx.db, token_hash, rotation.now, rotation)
    except resources.Implied as implied:  # the grant's one resource, unnamed (left unrotated): named, then rotated
        rotation.resource, rotation.accepted = await resources.named(ctx, rotation, implied.resource)
        rotated, row = await token_store.rotate(ctx.db, token_hash, rotation.now, rotation)
    client = rotation.client
    if not rotated:
        replay = None
        if row is not None and client is not None and row.app_id == client.app_id and row.revoked_at is None:
            replay = await _reused(ctx, client, rotation, token_hash, successor, address)
        if replay is None:
            raise InvalidGrant(_BAD_REFRESH)
        return replay
    if not client.rotates_refresh_tokens:  # type: ignore[union-attr]
        successor = refresh_token  # kept: the same token goes back
    issued = access_token.issue(
        ctx, client, jti=rotation.jti, user_id=row.user_id, permissions=rotation.permissions,  # type: ignore[union-attr,arg-type]
        now=rotation.now, refresh_token=successor, audience=rotation.audience, family=row.code_hash,  # type: ignore[union-attr]
    )
    if openid.is_openid(rotation.scoped):  # the scope's, whatever a resource narrowed the access token to
        # Core §12.2: a new ID token, with the original sign-in's auth_time and no nonce.
        issued = await id_tokens.with_id_token(
            ctx, issued, app_id=client.app_id, user_id=row.user_id, auth_time=rotation.auth_time, nonce=None,  # type: ignore[union-attr]
            now=rotation.now, amr=rotation.amr,
        )
    return issued


class _Rotation(Caller):
    """One rotation as ``store.tokens.rotate`` asks for it (a ``store.tokens.Spender``)."""

    __slots__ = (
        "scope", "successor", "now", "jti", "permissions", "scoped", "auth_time", "amr", "resource", "accepted",
        "audience",
    )

    def __init__(self, ctx: Context, auth: ClientAuthentication, scope: str | None, successor: str) -> None:
        super().__init__(ctx, auth)
        self.scope, self.successor = scope, successor
        self.now = ctx.now()
        self.jti = new_token_id()
        self.permissions: tuple[str, ...] = ()
        self.scoped: tuple[str, ...] = ()  # the scope asked for, within the grant: the ID token's
        self.auth_time: int | None = None
        self.amr: str | None = None  # how the person signed in, as stored (core.amr.stored_amr)
        # RFC 8707: the resource the request named and what it accepts (None: any policy), and
        # the audience the token is then issued for.
        self.resource: str | None = None
        self.accepted: tuple[str, ...] | None = None
        self.audience: str | None = None

    @property
    def rotates(self) -> bool:
        """Whether the proven client's app rotates its refresh tokens (``store.tokens.Rotator``)."""
        return self.client.rotates_refresh_tokens  # type: ignore[union-attr]

    def narrow(self, row: Any) -> tuple[str, ...]:
        """What a refresh token ``row`` grants the request: the grant less what the app may no
        longer have (returned), and the access token's ``permissions`` and ``audience``: the scope
        asked for within it (``scoped``), narrowed to a resource (RFC 8707). Raises."""
        client = self.client
        assert client is not None
        grant = _still_granted(self.ctx, client, row.scope)
        self.permissions = self.scoped = permissions = _narrowed(grant, tuple(row.scope.split(" ")), self.scope)
        if row.resources is not None or self.resource is not None:
            self.audience = audience = resources.audience_of(row.resources, self.resource)
            if self.resource is None and resources.policy(self.ctx) == resources.REGISTERED:
                raise resources.Implied(audience)  # type: ignore[arg-type]
            self.permissions = resources.narrowed(permissions, self.accepted, audience)  # type: ignore[arg-type]
        return grant

    def issue(self, row: Any) -> Issue:
        """The rules of rotating the token ``row`` (unrotated, or as the rotation returned it): the
        caller's app, not revoked, unexpired, a scope within the grant; raises. Unrotated is the
        rotation's own condition (atomic). What the rotation writes."""
        ctx, client, now = self.ctx, self.client, self.now
        assert client is not None  # proven before the token is judged
        if row.app_id != client.app_id or row.revoked_at is not None or row.expires_at <= now:
            raise InvalidGrant(_BAD_REFRESH)
        if row.dpop_jkt is not None:
            dpop.check_binding(row.dpop_jkt, client, "refresh token")
        grant = self.narrow(row)
        permissions = self.permissions
        access = access_token.row(
            ctx, client, jti=self.jti, user_id=row.user_id, code_hash=row.code_hash, scope=" ".join(permissions), now=now,
            audience=self.audience,
        )
        self.auth_time = row.auth_time
        self.amr = row.amr
        if not client.rotates_refresh_tokens:
            return Issue(access, None, None)  # the token presented is kept
        # The successor keeps the whole grant (its scope and resources), whatever this access token
        # narrowed, less what the app may no longer have (never to come back with it).
        successor = refresh_row(
            ctx, client, self.successor, code_hash=row.code_hash, user_id=row.user_id, scope=" ".join(grant),
            access_jti=self.jti, now=now, auth_time=row.auth_time, session_jti=row.session_jti, resources=row.resources, amr=row.amr,
            dpop_jkt=row.dpop_jkt or dpop.refresh_binding(client),  # once bound, bound to the same key
        )
        return Issue(access, successor, None)


def refresh_row(
    ctx: Context, client: Client, refresh_token: str, *, code_hash: str, user_id: str, scope: str, access_jti: str,
    now: int, auth_time: int | None, session_jti: str | None, dpop_jkt: str | None = None,
    resources: str | None = None, amr: str | None = None,
) -> dict[str, Any]:
    """A refresh token's row (``store.tokens.REFRESH_COLUMNS``), valid ``refresh_token_ttl`` from
    ``now``: its family (``code_hash``), the access token issued beside it, what OpenID Connect
    carries from the code (when the user signed in; the browser session it ends with, if any), the
    DPoP key it is bound to (``dpop_jkt``, RFC 9449 §5; a successor keeps its predecessor's), and the
    grant's RFC 8707 resources (as stored, ``core.resources.stored``)."""
    return {
        "auth_time": auth_time,
        "amr": amr,
        "session_jti": session_jti,
        "token_hash": ctx.hasher.hash(refresh_token),
        "code_hash": code_hash,
        "app_id": client.app_id,
        "user_id": user_id,
        "scope": scope,
        "access_jti": access_jti,
        "issued_at": now,
        "expires_at": now + ctx.settings.refresh_token_ttl,
        "dpop_jkt": dpop_jkt,
        "resources": resources,
        "key_id": client.key_id,
    }


def _still_granted(ctx: Context, client: Client, scope: str) -> tuple[str, ...]:
    """The grant (a refresh token's ``scope``) less what its app may no longer have: permissions
    taken from the app since (``PATCH /v1/apps``) or from the catalog (``catalog.still_allowed``, the
    rule authorization requests and client_credentials apply). InvalidGrant when nothing is left.
    (The user's consent needs no check here: it only grows, and withdrawing it revokes the grant's
    tokens.)"""
    allowed = perms.parse(client.app_permissions) if client.app_permissions else ()
    grant = ctx.catalog.still_allowed(scope.split(" "), allowed)
    if not grant:
        raise InvalidGrant("The app may no longer have any permission of this grant.")
    return grant


def _narrowed(grant: tuple[str, ...], original: tuple[str, ...], scope: str | None) -> tuple[str, ...]:
    """RFC 6749 §6: the requested scope, which must lie within the original grant (``original``) and
    what the app may still have of it (``grant``); all of ``grant`` by default."""
    if scope is None:
        return grant
    permissions = perms.parse(scope, field="scope", separator=" ")
    beyond = [p for p in permissions if p not in original]
    if beyond:
        raise InvalidScope(f"scope exceeds the original grant: {', '.join(beyond)}.")
    lost = [p for p in permissions if p not in grant]
    if lost:
        raise InvalidScope(f"Permission(s) not allowed for this app: {', '.join(lost)}.")
    return permissions


async def _reused(
    ctx: Context, client: Client, rotation: _Rotation, token_hash: str, successor: str, address: str | None
) -> IssuedToken | None:
    """A live token of the caller's that this call did not rotate (rotated before, or just now by a
    concurrent caller), in a transaction of its own under the family's lock: within the grace
    window, the answer its rotation gave; otherwise its family is revoked (audited) and None.

    The answer given again is rebuilt from the successor's row: the same successor, and the access
    token issued beside it (its ``access_jti``, ``iat`` its ``issued_at``, the key that obtained it
    its ``key_id``) re-signed with the scope and audience this request asks for (a duplicate asks
    what the first asked), if that token is on no deny-list."""
    now = rotation.now
    async with ctx.db.write() as tx:
        await token_store.lock_refresh_family(tx, token_hash)
        known = await token_store.refresh_token_state(tx, token_hash)
        if known is None or known.app_id != client.app_id or known.rotated_at is None or known.revoked_at is not None:
            return None
        # A bound token's duplicate without its key's proof proves nothing: refused, the family kept.
        dpop.check_binding(known.dpop_jkt, client, "refresh token")
        grace = ctx.settings.refresh_token_grace
        # Timestamps are whole seconds: a grace of 0 must mean none, not "within the same second".
        if grace > 0 and now - known.rotated_at <= grace:
            child = await token_store.refresh_token_state(tx, ctx.hasher.hash(successor))
            again = await _again(ctx, tx, client, rotation, child, successor) if child is not None else None
            if again is not None:
                return again
        await token_store.revoke_family(tx, known.code_hash, now, now + ctx.settings.access_token_ttl)
        await audit.record(
            ctx, tx, "refresh_token_reused", actor=client.app_id, user_id=known.user_id, app_id=client.app_id,
            address=address, now=now, key_id=client.key_id, family_revoked=True,
        )
    return None


async def _again(
    ctx: Context, tx: Any, client: Client, rotation: _Rotation, child: Any, successor: str
) -> IssuedToken | None:
    """The answer a rotation gave, again (``_reused``): the successor ``child`` (its row) unrevoked,
    the caller's app's, its access token unexpired and on no deny-list."""
    now = rotation.now
    if child.revoked_at is not None or child.app_id != client.app_id or child.issued_at + ctx.settings.access_token_ttl <= now:
        return None
    try:
        rotation.narrow(child)
    except (InvalidGrant, InvalidScope, resources.Implied):
        return None
    if await token_store.denied(tx, child.code_hash, child.access_jti):
        return None
    return access_token.issue(
        ctx, client, jti=child.access_jti, user_id=child.user_id, permissions=rotation.permissions, now=now,
        refresh_token=successor, audience=rotation.audience, family=child.code_hash, iat=child.issued_at,
    )
