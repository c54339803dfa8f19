"""Apps and their keys, managed by the developer who owns them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from grantd.core import audit, authorization
from grantd.core import permissions as perms
from grantd.core import redirect_uris
from grantd.core.clients import CLIENT_TYPES, CONFIDENTIAL
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest, NotFound
from grantd.crypto.secrets import new_app_key, new_key_id, new_key_secret, new_secret, new_uuid, s256
from grantd.store import apps as store

MAX_REDIRECT_URIS = 20
NAME_MAX_LENGTH = 200

T = TypeVar("T")


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
class TrialRequest:
    """An authorization request for the owner to try their app with, and the verifier that redeems its code."""

    client_id: str
    redirect_uri: str
    scope: str  # space-separated, as in OAuth 2.0
    state: str
    code_challenge: str
    code_verifier: str  # PKCE (RFC 7636): sent to the token endpoint with the code, never in the URL

    def query(self) -> dict[str, str]:
        """The parameters of the authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)."""
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }


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
    fields = _Fields()
    fields.check("client_type", lambda: _client_type(client_type))
    name_ = fields.check("name", lambda: _name(name))
    uris_ = fields.check("redirect_uris", lambda: _redirect_uris(uris))
    permissions_ = fields.check("permissions", lambda: _permissions(ctx, permissions))
    fields.done()
    assert name_ is not None and uris_ is not None and permissions_ is not None  # else done() raised
    name = name_
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
    fields = _Fields()
    if name is not None:
        values["name"] = fields.check("name", lambda: _name(name))
    if uris is not None:
        values["redirect_uris"] = fields.check("redirect_uris", lambda: _redirect_uris(uris))
    if permissions is not None:
        values["permissions"] = fields.check("permissions", lambda: _permissions(ctx, permissions))
    fields.done()
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


async def _trial_target(
    ctx: Context, fields: _Fields, app_id: str, redirect_uri: str | None
) -> authorization.Target | None:
    try:
        return await authorization.resolve_target(ctx, app_id, redirect_uri)
    except GrantdError as exc:
        fields.errors.setdefault("redirect_uri", exc)
        return None


async def trial_request(ctx: Context, owner_id: str, app_id: str, redirect_uri: str | None, scope: str | None) -> TrialRequest:
    """An authorization code request for the owner's own app, with a fresh state and PKCE S256 pair.

    It passes the same checks as an authorization request from a client (a live app, a registered
    redirect_uri, a scope within the app's permissions), so a URL is only handed out when
    it will reach the consent page. The scope defaults to every permission of the app.
    """
    if (await get_owned(ctx, owner_id, app_id)).disabled_at is not None:
        raise InvalidRequest("The app is disabled; it cannot be authorized.")
    fields = _Fields()
    target = await _trial_target(ctx, fields, app_id, redirect_uri)
    code_verifier = new_secret()  # 43 characters of base64url: 256 bits, within RFC 7636's 43..128
    code_challenge, state = s256(code_verifier), new_secret()
    request = None
    if target is not None:
        request = fields.check(
            "scope",
            lambda: authorization.validate_request(
                ctx,
                target,
                response_type="code",
                scope=scope,
                state=state,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            ),
        )
    fields.done()
    assert target is not None and request is not None  # else done() raised
    return TrialRequest(app_id, target.redirect_uri, " ".join(request.permissions), state, code_challenge, code_verifier)
