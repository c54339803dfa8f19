"""The token endpoint's rules: key authentication, single-use codes, access tokens (RFC 9068)."""

from __future__ import annotations

from dataclasses import dataclass

from grantd.core.context import Context
from grantd.core.errors import InvalidClient, InvalidGrant
from grantd.crypto.secrets import new_uuid
from grantd.store import apps as app_store
from grantd.store import codes as code_store
from grantd.store import tokens as token_store

ACCESS_TOKEN_TYPE = "at+jwt"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str  # space-separated, as in the token's `scope` claim
    permissions: tuple[str, ...]


async def authenticate_key(ctx: Context, key_id: str, key_secret: str) -> str:
    """The app a live key belongs to; InvalidClient for a wrong, revoked or disabled-app key."""
    async with ctx.db.read() as conn:
        key = await app_store.live_key(conn, key_id)
    if key is None or not ctx.hasher.verify(key_secret, key.secret_hash):
        raise InvalidClient("Unknown key, wrong key_secret, or the key or its app is disabled.")
    return key.app_id


async def redeem_code(ctx: Context, auth_code: str, key_id: str, key_secret: str) -> IssuedToken:
    """Exchange a code for an access token, at most once. A code presented again revokes what it issued."""
    app_id = await authenticate_key(ctx, key_id, key_secret)
    code_hash = ctx.hasher.hash(auth_code)
    now = ctx.now()
    jti = new_uuid()
    ttl = ctx.settings.access_token_ttl
    async with ctx.db.write() as tx:
        code = await code_store.redeem(tx, code_hash, app_id, now)
        if code is not None:
            permissions = tuple(code.permissions.split(","))
            await token_store.insert_access_token(
                tx,
                jti=jti,
                app_id=app_id,
                user_id=code.user_id,
                key_id=key_id,
                code_hash=code_hash,
                scope=" ".join(permissions),
                issued_at=now,
                expires_at=now + ttl,
            )
        else:
            known = await code_store.find(tx, code_hash)
            if known is not None and known.app_id == app_id and known.redeemed_at is not None:
                await token_store.revoke_issued_from_code(tx, code_hash, now)
    if code is None:
        raise InvalidGrant("The authorization code is unknown, expired, already used, or belongs to another app.")
    claims = {
        "iss": ctx.settings.issuer,
        "sub": code.user_id,
        "aud": ctx.settings.audience,
        "client_id": app_id,
        "scope": " ".join(permissions),
        "iat": now,
        "exp": now + ttl,
        "jti": jti,
        "user_id": code.user_id,
        "permissions": list(permissions),
    }
    return IssuedToken(ctx.signing.sign(claims, ACCESS_TOKEN_TYPE), ttl, claims["scope"], permissions)
