"""Authorization requests: consent and authorization codes (RFC 6749 §4.1, the Neucron rules)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from grantd.core import permissions as perms
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import ConsentRequired, InvalidClient, InvalidRedirectUri
from grantd.crypto.secrets import new_secret, new_uuid
from grantd.store import apps as app_store
from grantd.store import codes as code_store
from grantd.store import grants as grant_store


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
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


async def _checked(ctx: Context, conn, request: AuthorizationRequest) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """The requested permissions, once the app, its key, the redirect URI and the permissions all check out."""
    requested = perms.parse(request.permissions)
    app = await app_store.live(conn, request.app_id)
    if app is None or not ctx.hasher.verify(request.app_key, app.app_key_hash):
        raise InvalidClient("Unknown app, wrong app_key, or the app is disabled.")
    if request.redirect_uri not in app_store.redirect_uris_of(app):
        raise InvalidRedirectUri("redirect_uri is not registered for this app.")
    ctx.catalog.require_allowed(requested, perms.parse(app.permissions))
    return requested


async def authorize(ctx: Context, user: Principal, request: AuthorizationRequest) -> IssuedCode:
    """Issue a code for the requested permissions: the first request records consent, later ones must lie within it."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        requested = await _checked(ctx, tx, request)
        grant = await grant_store.of(tx, user.user_id, request.app_id)
        if grant is None:
            await grant_store.insert_if_absent(
                tx,
                grant_id=new_uuid(),
                user_id=user.user_id,
                app_id=request.app_id,
                permissions=perms.join(requested),
                now=now,
            )
            grant = await grant_store.of(tx, user.user_id, request.app_id)
        granted = set(perms.parse(grant.permissions))
        missing = [name for name in requested if name not in granted]
        if missing:
            raise ConsentRequired(
                f"The user has not granted: {', '.join(missing)}. "
                "Add them with PATCH /oauth/permissions/grant, then authorize again."
            )
        code = new_secret()
        expires_at = now + ctx.settings.authorization_code_ttl
        await code_store.insert_code(
            tx,
            code_hash=ctx.hasher.hash(code),
            app_id=request.app_id,
            user_id=user.user_id,
            redirect_uri=request.redirect_uri,
            permissions=perms.join(requested),
            state=request.state,
            now=now,
            expires_at=expires_at,
        )
    return IssuedCode(code, user.user_id, request.state, _with_query(request.redirect_uri, code=code, state=request.state), expires_at)


async def grant_permissions(ctx: Context, user: Principal, request: AuthorizationRequest) -> None:
    """Add the requested permissions to the user's grant for the app, creating it if there is none."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        requested = await _checked(ctx, tx, request)
        inserted = await grant_store.insert_if_absent(
            tx,
            grant_id=new_uuid(),
            user_id=user.user_id,
            app_id=request.app_id,
            permissions=perms.join(requested),
            now=now,
        )
        if not inserted:
            grant = await grant_store.of(tx, user.user_id, request.app_id)
            merged = perms.union(perms.parse(grant.permissions), requested)
            await grant_store.set_permissions(tx, grant.id, perms.join(merged), now)


def _with_query(uri: str, **params: str) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
