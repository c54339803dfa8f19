"""Apps and their keys, managed by the developer who owns them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grantd.core import audit
from grantd.core import permissions as perms
from grantd.core import redirect_uris
from grantd.core.clients import CLIENT_TYPES, CONFIDENTIAL
from grantd.core.context import Context
from grantd.core.errors import InvalidRequest, NotFound
from grantd.crypto.secrets import new_app_key, new_key_id, new_key_secret, new_uuid
from grantd.store import apps as store

MAX_REDIRECT_URIS = 20
NAME_MAX_LENGTH = 200


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
    )


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
    names = perms.parse(value)
    ctx.catalog.require_known(names)
    return perms.join(names)


async def create(
    ctx: Context,
    owner_id: str,
    name: str,
    uris: Sequence[str],
    permissions: str,
    client_type: str = CONFIDENTIAL,
    *,
    address: str | None = None,
    operator: bool = False,
) -> CreatedApp:
    """Register an app. A public client (a browser or native app) cannot keep a secret: PKCE is required for it."""
    if client_type not in CLIENT_TYPES:
        raise InvalidRequest(f"client_type must be one of: {', '.join(CLIENT_TYPES)}.")
    name, uris_, permissions_ = _name(name), _redirect_uris(uris), _permissions(ctx, permissions)
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
        )
        await audit.record(
            ctx, tx, "app_created", actor=audit.OPERATOR if operator else owner_id, user_id=owner_id, app_id=app_id,
            address=address, now=now, client_type=client_type, permissions=perms.parse(permissions_),
        )
    return CreatedApp(App(app_id, name, uris_, permissions_, now, now, None, client_type), app_key)


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
    address: str | None = None,
) -> App:
    values: dict[str, object] = {}
    if name is not None:
        values["name"] = _name(name)
    if uris is not None:
        values["redirect_uris"] = _redirect_uris(uris)
    if permissions is not None:
        values["permissions"] = _permissions(ctx, permissions)
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await _require_owned(tx, owner_id, app_id)
        if values:
            await store.update_app(tx, app_id, values, now)
            await audit.record(
                ctx, tx, "app_updated", actor=owner_id or audit.OPERATOR, user_id=row.owner_id, app_id=app_id,
                address=address, now=now, fields=sorted(values),
            )
        return _app(await store.owned_one(tx, owner_id, app_id))


async def disable(ctx: Context, owner_id: str | None, app_id: str, *, address: str | None = None) -> App:
    """Disable an app: its keys and unredeemed codes stop working at once."""
    now = ctx.now()
    async with ctx.db.write() as tx:
        row = await _require_owned(tx, owner_id, app_id)
        await store.disable(tx, app_id, now)
        if row.disabled_at is None:
            await audit.record(
                ctx, tx, "app_disabled", actor=owner_id or audit.OPERATOR, user_id=row.owner_id, app_id=app_id,
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
    return [Key(row.id, row.created_at, row.revoked_at, row.last_used_at) for row in rows]


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
    return Key(row.id, row.created_at, row.revoked_at, row.last_used_at)
