"""The token endpoints' rules: single-use codes, PKCE, refresh rotation, client credentials,
introspection and revocation. Access tokens are RFC 9068 JWTs; every one is recorded so it can be revoked.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from grantd.core import audit
from grantd.core import permissions as perms
from grantd.core.clients import Client, authenticate_client, authenticate_key, key_named_by, same_client, verified_key
from grantd.core.context import Context
from grantd.core.errors import InvalidGrant, InvalidScope, UnauthorizedClient
from grantd.crypto.jws import InvalidSignature
from grantd.crypto.secrets import new_secret, new_token_id, s256
from grantd.store import apps as app_store
from grantd.store import audit as audit_store
from grantd.store import codes as code_store
from grantd.store import tokens as token_store

ACCESS_TOKEN_TYPE = "at+jwt"
_BAD_CODE = "The authorization code is unknown, expired, already used, or belongs to another app."
_BAD_REFRESH = "The refresh token is unknown, expired, revoked, or belongs to another app."


class IssuedToken(NamedTuple):
    access_token: str
    expires_in: int
    scope: str  # space-separated, as in the token's `scope` claim
    refresh_token: str | None = None


def _sign_access_token(
    ctx: Context, *, jti: str, app_id: str, user_id: str | None, permissions: tuple[str, ...], iat: int, exp: int
) -> str:
    claims: dict[str, Any] = {
        "iss": ctx.settings.issuer,
        "sub": user_id or app_id,
        "aud": ctx.settings.audience,
        "client_id": app_id,
        "scope": " ".join(permissions),
        "iat": iat,
        "exp": exp,
        "jti": jti,
    }
    if user_id is not None:
        claims["user_id"] = user_id
    claims["permissions"] = list(permissions)
    return ctx.signing.sign(claims, ACCESS_TOKEN_TYPE)


async def redeem_code(
    ctx: Context,
    client: Client,
    auth_code: str,
    *,
    code_verifier: str | None = None,
    redirect_uri: str | None = None,
    with_refresh_token: bool = False,
    address: str | None = None,
) -> IssuedToken:
    """Exchange a code for tokens, at most once. A code presented again revokes everything it issued.

    The rules a code must pass are ``_check_code``'s, on both databases; spending it is atomic
    (at most one caller spends a code), and the tokens and the code_redeemed audit row are written
    with the spend or not at all. On SQLite that is one write transaction (the code's conditional
    ``UPDATE … RETURNING``, the checks, the INSERTs); on PostgreSQL a read of the code, the checks,
    then one statement that spends it and writes the rest (``code_store.spend_and_issue``). A code
    found already redeemed (or spent by a concurrent caller in between) is a replay: the family is
    revoked and code_replayed audited, in a transaction of their own."""
    if not ctx.db.is_sqlite:
        return await _redeem_on_postgres(ctx, auth_code, code_verifier, redirect_uri, with_refresh_token, address, client)
    code_hash = ctx.hasher.hash(auth_code)
    now = ctx.now()
    jti = new_token_id()
    refresh_token = new_secret() if with_refresh_token else None
    async with ctx.db.write() as tx:
        code = await code_store.redeem(tx, code_hash, client.app_id, now)
        if code is not None:
            # A failed check raises inside the transaction: the code is not spent.
            _check_code(code, client, now, code_verifier, redirect_uri)
            access, refresh, event = _redemption_rows(ctx, client, code, code_hash, now, jti, refresh_token, address)
            await token_store.insert_access_token(tx, **access)
            if refresh is not None:
                await token_store.insert_refresh_token(tx, **refresh)
            await audit_store.insert_event(tx, **event)
        else:
            await _replayed_code(ctx, tx, client, code_hash, now, address)
    if code is None:
        raise InvalidGrant(_BAD_CODE)
    return _issued_for_code(ctx, client, code, now, jti, refresh_token)


async def redeem_code_with_key(
    ctx: Context, key_id: str, key_secret: str, auth_code: str, *, address: str | None = None
) -> IssuedToken:
    """``clients.authenticate_key`` then ``redeem_code`` (the Neucron token request), with the same
    rules and errors. On PostgreSQL the key and the code are read by one SELECT (one round trip
    less); the key's secret is verified before anything about the code is looked at."""
    if ctx.db.is_sqlite:
        client = await authenticate_key(ctx, key_id, key_secret)
        return await redeem_code(ctx, client, auth_code, address=address)
    return await _redeem_on_postgres(ctx, auth_code, None, None, False, address, key=(key_id, key_secret, None))


async def redeem_code_with_secret(
    ctx: Context,
    client_id: str | None,
    client_secret: str,
    auth_code: str,
    *,
    code_verifier: str | None = None,
    redirect_uri: str | None = None,
    with_refresh_token: bool = False,
    address: str | None = None,
) -> IssuedToken:
    """``clients.authenticate_client`` of a confidential client, then ``redeem_code`` (the OAuth 2.0
    authorization_code grant), with the same rules and errors. On PostgreSQL the key and the code
    are read by one SELECT (one round trip less)."""
    if ctx.db.is_sqlite:
        client = await authenticate_client(ctx, client_id, client_secret)
        return await redeem_code(
            ctx, client, auth_code, code_verifier=code_verifier, redirect_uri=redirect_uri,
            with_refresh_token=with_refresh_token, address=address,
        )
    return await _redeem_on_postgres(
        ctx, auth_code, code_verifier, redirect_uri, with_refresh_token, address,
        key=(key_named_by(client_secret), client_secret, client_id),
    )


async def _redeem_on_postgres(
    ctx: Context, auth_code: str, code_verifier: str | None, redirect_uri: str | None, with_refresh_token: bool,
    address: str | None, client: Client | None = None, key: tuple[str, str, str | None] | None = None,
) -> IssuedToken:
    """PostgreSQL: read the code, check it, then spend it with what it issues in one statement.

    ``client`` is the caller already authenticated; else ``key`` = (key_id, key_secret, client_id)
    is read with the code in one SELECT, and its secret verified (``client_id``, when sent, matched
    to its app) before anything about the code is looked at."""
    code_hash = ctx.hasher.hash(auth_code)
    now = ctx.now()
    jti = new_token_id()
    refresh_token = new_secret() if with_refresh_token else None
    async with ctx.db.autocommit() as conn:
        if client is None:
            key_id, key_secret, client_id = key  # type: ignore[misc]
            row, code = await code_store.live_key_and_code(conn, key_id, code_hash)
            client = same_client(verified_key(ctx, key_id, key_secret, row), client_id)
        else:
            code = await code_store.find(conn, code_hash)
        spent = await _spend_in_one_statement(
            ctx, conn, client, code, code_hash, now, jti, refresh_token, code_verifier, redirect_uri, address
        )
    if not spent:
        await _not_spent(ctx, client, code, code_hash, now, address)
    return _issued_for_code(ctx, client, code, now, jti, refresh_token)


async def _spend_in_one_statement(  # type: ignore[no-untyped-def]
    ctx: Context, conn, client: Client, code: Any, code_hash: str, now: int, jti: str, refresh_token: str | None,
    code_verifier: str | None, redirect_uri: str | None, address: str | None,
) -> bool:
    """PostgreSQL: check ``code`` (read on ``conn`` without a lock; None if unknown) and spend it
    with everything it issues in one statement. Whether it was spent; a failed check raises."""
    if code is None or code.redeemed_at is not None:
        return False
    _check_code(code, client, now, code_verifier, redirect_uri)  # raises before anything is written
    access, refresh, event = _redemption_rows(ctx, client, code, code_hash, now, jti, refresh_token, address)
    return await code_store.spend_and_issue(conn, code_hash, client.app_id, now, access=access, refresh=refresh, audit=event)


async def _not_spent(ctx: Context, client: Client, code: Any, code_hash: str, now: int, address: str | None) -> None:
    """PostgreSQL, once the read's connection is back in the pool: a code of the caller's that was
    redeemed before, or just now by a concurrent caller, is a replay (its own transaction). Raises."""
    if code is not None and code.app_id == client.app_id:
        async with ctx.db.write() as tx:
            await _replayed_code(ctx, tx, client, code_hash, now, address)
    raise InvalidGrant(_BAD_CODE)


def _issued_for_code(
    ctx: Context, client: Client, code: Any, now: int, jti: str, refresh_token: str | None
) -> IssuedToken:
    permissions = tuple(code.permissions.split(","))
    ttl = ctx.settings.access_token_ttl
    access_token = _sign_access_token(
        ctx, jti=jti, app_id=client.app_id, user_id=code.user_id, permissions=permissions, iat=now, exp=now + ttl
    )
    return IssuedToken(access_token, ttl, " ".join(permissions), refresh_token)


def _check_code(code: Any, client: Client, now: int, code_verifier: str | None, redirect_uri: str | None) -> None:
    """The rules of redeeming a code, for both databases: ``code`` is its row (``code_store``'s
    ``find`` before it is spent, or ``redeem``'s as it spends it). The caller's app, unexpired,
    PKCE, the redirect URI; raises InvalidGrant. Unredeemed is the spend's own condition (atomic)."""
    if code.app_id != client.app_id or code.expires_at <= now:
        raise InvalidGrant(_BAD_CODE)
    _check_pkce(code.code_challenge, code_verifier, client)
    if redirect_uri is not None and redirect_uri != code.redirect_uri:
        raise InvalidGrant("redirect_uri does not match the one the code was issued for.")


def _redemption_rows(
    ctx: Context, client: Client, code: Any, code_hash: str, now: int, jti: str, refresh_token: str | None,
    address: str | None,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """What a redemption writes: the access token's row, the refresh token's (when one is issued)
    and the code_redeemed audit row."""
    scope = " ".join(code.permissions.split(","))
    access = {
        "jti": jti,
        "app_id": client.app_id,
        "user_id": code.user_id,
        "key_id": client.key_id,
        "code_hash": code_hash,
        "scope": scope,
        "issued_at": now,
        "expires_at": now + ctx.settings.access_token_ttl,
    }
    refresh = None
    if refresh_token is not None:
        refresh = {
            "token_hash": ctx.hasher.hash(refresh_token),
            "code_hash": code_hash,
            "app_id": client.app_id,
            "user_id": code.user_id,
            "scope": scope,
            "access_jti": jti,
            "issued_at": now,
            "expires_at": now + ctx.settings.refresh_token_ttl,
        }
    event = audit.entry(
        ctx, "code_redeemed", actor=client.app_id, user_id=code.user_id, app_id=client.app_id,
        address=address, now=now, jti=jti, key_id=client.key_id,
    )
    return access, refresh, event


async def _replayed_code(  # type: ignore[no-untyped-def]
    ctx: Context, tx, client: Client, code_hash: str, now: int, address: str | None
) -> None:
    """A code that was not spent now: if it is the caller's and was redeemed before, revoke its
    family and audit code_replayed, in ``tx``."""
    known = await code_store.find(tx, code_hash)
    if known is not None and known.app_id == client.app_id and known.redeemed_at is not None:
        await token_store.revoke_family(tx, code_hash, now)
        await audit.record(
            ctx, tx, "code_replayed", actor=client.app_id, user_id=known.user_id, app_id=client.app_id,
            address=address, now=now, key_id=client.key_id, family_revoked=True,
        )


def _check_pkce(code_challenge: str | None, code_verifier: str | None, client: Client) -> None:
    """RFC 7636 with S256 only; a verifier for a code issued without a challenge is a downgrade and refused."""
    if code_challenge is None:
        if code_verifier is not None:
            raise InvalidGrant("code_verifier was sent for a code issued without a code_challenge.")
        if client.is_public:
            raise InvalidGrant("A public client's code must be bound to a PKCE code_challenge.")
        return
    if code_verifier is None:
        raise InvalidGrant("code_verifier is required: the code was issued with a code_challenge.")
    if not valid_pkce_value(code_verifier) or s256(code_verifier) != code_challenge:
        raise InvalidGrant("code_verifier does not match the code_challenge.")


def valid_pkce_value(value: str) -> bool:
    """43 to 128 characters of [A-Z a-z 0-9 - . _ ~] (RFC 7636 §4.1 and §4.2)."""
    return 43 <= len(value) <= 128 and all(c.isascii() and (c.isalnum() or c in "-._~") for c in value)


async def refresh(
    ctx: Context, client: Client, refresh_token: str, scope: str | None = None, *, address: str | None = None
) -> IssuedToken:
    """Rotate a refresh token (RFC 6749 §6, RFC 9700 §4.14).

    A rotated token presented again revokes its whole family, except within the grace
    window, where the duplicate gets the same successor and an equivalent access token.
    A successful rotation is not audited (a hot path); a reuse that revokes the family is.

    The rules are ``_check_refresh``'s, on both databases; rotating is atomic. On SQLite one write
    transaction rotates (conditional ``UPDATE … RETURNING``), checks and inserts; on PostgreSQL a
    read of the token, the checks, then one statement that takes the family's lock, rotates and
    inserts (``token_store.rotate_and_issue``). A token found rotated (or rotated by a concurrent
    caller in between) goes to the grace window or revokes the family, in a transaction of its own.
    """
    token_hash = ctx.hasher.hash(refresh_token)
    successor = ctx.hasher.successor(refresh_token)
    now = ctx.now()
    jti = new_token_id()
    replay: IssuedToken | None = None
    if ctx.db.is_sqlite:
        async with ctx.db.write() as tx:
            await token_store.lock_refresh_family(tx, token_hash)
            row = await token_store.rotate_refresh_token(tx, token_hash, client.app_id, now)
            if row is not None:
                permissions = _check_refresh(row, client, now, scope)  # raises inside: not rotated
                access, successor_row = _rotation_rows(ctx, client, row, permissions, now, jti, successor)
                await token_store.insert_access_token(tx, **access)
                await token_store.insert_refresh_token(tx, **successor_row)
            else:
                replay = await _replayed_refresh(ctx, tx, client, token_hash, successor, now, address)
        rotated = row is not None
        if not rotated:
            if replay is None:
                raise InvalidGrant(_BAD_REFRESH)
            return replay
        return _rotated(ctx, client, row, permissions, now, jti, successor)
    async with ctx.db.autocommit() as conn:
        row = await token_store.find_refresh_token(conn, token_hash)
        permissions = await _rotate_in_one_statement(ctx, conn, client, row, token_hash, scope, now, jti, successor)
    if permissions is None:
        return await _not_rotated(ctx, client, row, token_hash, successor, now, address)
    return _rotated(ctx, client, row, permissions, now, jti, successor)


async def refresh_with_secret(
    ctx: Context, client_id: str | None, client_secret: str, refresh_token: str, scope: str | None = None,
    *, address: str | None = None,
) -> IssuedToken:
    """``clients.authenticate_client`` of a confidential client, then ``refresh``, with the same rules
    and errors. On PostgreSQL the key and the refresh token are read by one SELECT (one round trip
    less); the key's secret is verified before anything about the token is looked at."""
    if ctx.db.is_sqlite:
        client = await authenticate_client(ctx, client_id, client_secret)
        return await refresh(ctx, client, refresh_token, scope, address=address)
    key_id = key_named_by(client_secret)
    token_hash = ctx.hasher.hash(refresh_token)
    successor = ctx.hasher.successor(refresh_token)
    now = ctx.now()
    jti = new_token_id()
    async with ctx.db.autocommit() as conn:
        key, row = await token_store.live_key_and_refresh_token(conn, key_id, token_hash)
        client = same_client(verified_key(ctx, key_id, client_secret, key), client_id)
        permissions = await _rotate_in_one_statement(ctx, conn, client, row, token_hash, scope, now, jti, successor)
    if permissions is None:
        return await _not_rotated(ctx, client, row, token_hash, successor, now, address)
    return _rotated(ctx, client, row, permissions, now, jti, successor)


async def _rotate_in_one_statement(  # type: ignore[no-untyped-def]
    ctx: Context, conn, client: Client, row: Any, token_hash: str, scope: str | None, now: int, jti: str,
    successor: str,
) -> tuple[str, ...] | None:
    """PostgreSQL: check ``row`` (the token read on ``conn`` without a lock; None if unknown) and
    rotate it with the tokens it issues in one statement. The new access token's permissions, or
    None if it was not rotated; a failed check raises."""
    if row is None or row.rotated_at is not None:
        return None
    permissions = _check_refresh(row, client, now, scope)  # raises before anything is written
    access, successor_row = _rotation_rows(ctx, client, row, permissions, now, jti, successor)
    rotated = await token_store.rotate_and_issue(
        conn, token_hash, client.app_id, now, row.code_hash, access=access, refresh=successor_row
    )
    return permissions if rotated else None


async def _not_rotated(
    ctx: Context, client: Client, row: Any, token_hash: str, successor: str, now: int, address: str | None
) -> IssuedToken:
    """PostgreSQL, once the read's connection is back in the pool: a live token of the caller's that
    was rotated before, or just now by a concurrent caller, gets the grace window's answer or revokes
    its family (its own transaction). Otherwise, or then, InvalidGrant."""
    replay = None
    if row is not None and row.app_id == client.app_id and row.revoked_at is None:
        async with ctx.db.write() as tx:
            await token_store.lock_refresh_family(tx, token_hash)
            replay = await _replayed_refresh(ctx, tx, client, token_hash, successor, now, address)
    if replay is None:
        raise InvalidGrant(_BAD_REFRESH)
    return replay


def _rotated(
    ctx: Context, client: Client, row: Any, permissions: tuple[str, ...], now: int, jti: str, successor: str
) -> IssuedToken:
    ttl = ctx.settings.access_token_ttl
    access_token = _sign_access_token(
        ctx, jti=jti, app_id=client.app_id, user_id=row.user_id, permissions=permissions, iat=now, exp=now + ttl
    )
    return IssuedToken(access_token, ttl, " ".join(permissions), successor)


def _check_refresh(row: Any, client: Client, now: int, scope: str | None) -> tuple[str, ...]:
    """The rules of rotating a refresh token, for both databases: ``row`` is its row (``token_store``'s
    ``find_refresh_token`` before it is rotated, or ``rotate_refresh_token``'s as it rotates it). The
    caller's app, not revoked, unexpired, a scope within the grant; raises. Unrotated is the rotation's
    own condition (atomic). The permissions of the new access token."""
    if row.app_id != client.app_id or row.revoked_at is not None or row.expires_at <= now:
        raise InvalidGrant(_BAD_REFRESH)
    granted = tuple(row.scope.split(" "))
    if scope is None:
        return granted
    permissions = perms.parse(scope, field="scope", separator=" ")
    beyond = [p for p in permissions if p not in granted]
    if beyond:
        raise InvalidScope(f"scope exceeds the original grant: {', '.join(beyond)}.")
    return permissions


def _rotation_rows(
    ctx: Context, client: Client, row: Any, permissions: tuple[str, ...], now: int, jti: str, successor: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a rotation writes: the new access token's row and the successor refresh token's."""
    access = {
        "jti": jti,
        "app_id": client.app_id,
        "user_id": row.user_id,
        "key_id": client.key_id,
        "code_hash": row.code_hash,
        "scope": " ".join(permissions),
        "issued_at": now,
        "expires_at": now + ctx.settings.access_token_ttl,
    }
    successor_row = {
        "token_hash": ctx.hasher.hash(successor),
        "code_hash": row.code_hash,
        "app_id": client.app_id,
        "user_id": row.user_id,
        "scope": row.scope,
        "access_jti": jti,
        "issued_at": now,
        "expires_at": now + ctx.settings.refresh_token_ttl,
    }
    return access, successor_row


async def _replayed_refresh(
    ctx: Context, tx, client: Client, token_hash: str, successor: str, now: int, address: str | None = None  # type: ignore[no-untyped-def]
) -> IssuedToken | None:
    """The grace-window result for a just-rotated token; otherwise revoke the family and return None."""
    known = await token_store.refresh_token_state(tx, token_hash)
    if known is None or known.app_id != client.app_id or known.rotated_at is None or known.revoked_at is not None:
        return None
    grace = ctx.settings.refresh_token_grace
    # Timestamps are whole seconds: a grace of 0 must mean none, not "within the same second".
    if grace > 0 and now - known.rotated_at <= grace:
        child = await token_store.refresh_token_state(tx, ctx.hasher.hash(successor))
        if child is not None and child.revoked_at is None:
            access = await token_store.by_jti(tx, child.access_jti)
            if access is not None and access.revoked_at is None:
                permissions = tuple(access.scope.split(" "))
                token = _sign_access_token(
                    ctx,
                    jti=access.jti,
                    app_id=access.app_id,
                    user_id=access.user_id,
                    permissions=permissions,
                    iat=access.issued_at,
                    exp=access.expires_at,
                )
                return IssuedToken(token, access.expires_at - now, access.scope, successor)
    await token_store.revoke_family(tx, known.code_hash, now)
    await audit.record(
        ctx, tx, "refresh_token_reused", actor=client.app_id, user_id=known.user_id, app_id=client.app_id,
        address=address, now=now, key_id=client.key_id, family_revoked=True,
    )
    return None


async def client_credentials(ctx: Context, client: Client, scope: str | None) -> IssuedToken:
    """An app acting on its own behalf (RFC 6749 §4.4): ``sub`` is the app."""
    if client.is_public:
        raise UnauthorizedClient("A public client may not use the client_credentials grant.")
    app_permissions = client.app_permissions
    if app_permissions is None:
        async with ctx.db.read() as conn:
            app = await app_store.live(conn, client.app_id)
        if app is None:
            raise InvalidGrant("The app is disabled.")
        app_permissions = app.permissions
    allowed = perms.parse(app_permissions)
    permissions = allowed if scope is None else perms.parse(scope, field="scope", separator=" ")
    ctx.catalog.require_allowed(permissions, allowed)
    now, jti, ttl = ctx.now(), new_token_id(), ctx.settings.access_token_ttl
    async with ctx.db.write_one() as tx:  # one INSERT: on PostgreSQL, no BEGIN/COMMIT round trips
        await token_store.insert_access_token(
            tx,
            jti=jti,
            app_id=client.app_id,
            user_id=None,
            key_id=client.key_id,
            code_hash=None,
            scope=" ".join(permissions),
            issued_at=now,
            expires_at=now + ttl,
        )
    access_token = _sign_access_token(
        ctx, jti=jti, app_id=client.app_id, user_id=None, permissions=permissions, iat=now, exp=now + ttl
    )
    return IssuedToken(access_token, ttl, " ".join(permissions))


def _access_token_claims(ctx: Context, token: str) -> dict[str, Any] | None:
    if token.count(".") != 2:
        return None
    try:
        return ctx.signing.verify(token, typ=ACCESS_TOKEN_TYPE, issuer=ctx.settings.issuer)
    except InvalidSignature:
        return None


async def introspect(ctx: Context, client_id: str | None, client_secret: str, token: str) -> dict[str, Any]:
    """RFC 7662 for a confidential client (``clients.authenticate_client``'s rules and errors): what
    the token is, if it is active and the caller's own; otherwise only ``active: false``.

    The key and the token's state are read by one SELECT; the key's secret is verified before
    anything about the token is looked at."""
    key_id = key_named_by(client_secret)
    claims = _access_token_claims(ctx, token)
    async with ctx.db.read() as conn:
        if claims is not None:
            key, row = await token_store.live_key_and_access_token_state(conn, key_id, claims["jti"])
        else:
            key, row = await token_store.live_key_and_refresh_token_state(conn, key_id, ctx.hasher.hash(token))
    client = same_client(verified_key(ctx, key_id, client_secret, key), client_id)
    now = ctx.now()
    if row is None or row.app_id != client.app_id or row.revoked_at is not None:
        return {"active": False}
    if row.expires_at <= now or row.app_disabled_at is not None:
        return {"active": False}
    if claims is not None:
        result = {name: claims[name] for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti")}
        if "user_id" in claims:
            result["user_id"] = claims["user_id"]
        return {"active": True, **result, "token_type": "Bearer"}
    if row.rotated_at is not None:
        return {"active": False}
    return {
        "active": True,
        "scope": row.scope,
        "client_id": row.app_id,
        "sub": row.user_id,
        "user_id": row.user_id,
        "exp": row.expires_at,
        "iat": row.issued_at,
        "iss": ctx.settings.issuer,
        "token_type": "refresh_token",
    }


async def revoke(ctx: Context, client: Client, token: str) -> None:
    """RFC 7009: revoke the caller's own token; a refresh token takes its whole family with it.

    Unknown tokens and other apps' tokens are ignored, as the RFC asks (the answer is the same).
    """
    now = ctx.now()
    claims = _access_token_claims(ctx, token)
    async with ctx.db.write() as tx:
        if claims is not None:
            await token_store.revoke_access_token(tx, claims["jti"], client.app_id, now)
            return
        row = await token_store.refresh_token_state(tx, ctx.hasher.hash(token))
        if row is not None and row.app_id == client.app_id:
            await token_store.revoke_family(tx, row.code_hash, now)

