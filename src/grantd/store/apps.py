from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from collections import namedtuple

from sqlalchemy import bindparam, delete, func, insert, literal_column, or_, select, true, update
from sqlalchemy.engine import Row

from grantd.store.db import fetch_one, upsert
from grantd.store.prepared import Prepared
from grantd.store.schema import app_keys, apps, client_assertion_jtis

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

# An app's branding (migration 0009): the column names, as core.apps names the settings.
BRANDING_COLUMNS = ("logo_uri", "client_uri", "tos_uri", "policy_uri", "description", "domain", "accent_color", "theme")

# An app's OpenID Connect settings (migration 0012), named as core.apps names them.
OPENID_COLUMNS = (
    "post_logout_redirect_uris", "id_token_signed_response_alg", "subject_type", "sector_identifier_uri", "require_nonce",
    "require_pushed_authorization_requests",
    "token_endpoint_auth_method", "jwks", "jwks_uri",  # migration 0014
    "dpop_bound_access_tokens",  # migration 0015
    "security_profile", "refresh_token_rotation",  # migration 0016
)

# Dynamic registration (migration 0020): how the app came to be and RFC 7591's application_type.
REGISTRATION_COLUMNS = ("registration", "application_type")
# The reserved account that owns the apps no developer owns (registered by themselves, RFC 7591,
# or by their client ID metadata document): it cannot sign in (migration 0020).
SELF_REGISTERED = "self-registered"

_APP_COLUMNS = (
    apps.c.id,
    apps.c.owner_id,
    apps.c.name,
    apps.c.redirect_uris,
    apps.c.permissions,
    apps.c.created_at,
    apps.c.updated_at,
    apps.c.disabled_at,
    apps.c.client_type,
    *(apps.c[name] for name in BRANDING_COLUMNS),
    *(apps.c[name] for name in OPENID_COLUMNS),
    *(apps.c[name] for name in REGISTRATION_COLUMNS),
)


def redirect_uris_of(row: Row) -> list[str]:
    return json.loads(row.redirect_uris)


async def insert_app(
    conn: AsyncConnection,
    *,
    app_id: str,
    owner_id: str,
    name: str,
    redirect_uris: list[str],
    permissions: str,
    app_key_hash: str,
    client_type: str,
    now: int,
    branding: Mapping[str, str | None] | None = None,
    openid: Mapping[str, Any] | None = None,
    registration: Mapping[str, Any] | None = None,
) -> None:
    """``branding``, ``openid``: some of ``BRANDING_COLUMNS``, ``OPENID_COLUMNS`` and their values
    (the rest stay NULL; ``post_logout_redirect_uris`` a list, stored as JSON); ``registration``:
    the columns of a dynamic registration (``REGISTRATION_COLUMNS``, the registration access
    token's hash, the metadata document's freshness)."""
    await conn.execute(
        insert(apps).values(
            **(branding or {}),
            **(registration or {}),
            **_openid_values(openid or {}),
            client_type=client_type,
            id=app_id,
            owner_id=owner_id,
            name=name,
            redirect_uris=json.dumps(redirect_uris),
            permissions=permissions,
            app_key_hash=app_key_hash,
            created_at=now,
            updated_at=now,
        )
    )


async def owned(conn: AsyncConnection, owner_id: str) -> Sequence[Row]:
    query = select(*_APP_COLUMNS).where(apps.c.owner_id == owner_id).order_by(apps.c.created_at, apps.c.id)
    return (await conn.execute(query)).all()


async def owned_one(conn: AsyncConnection, owner_id: str | None, app_id: str) -> Row | None:
    """The app when ``owner_id`` owns it; any app when ``owner_id`` is None."""
    query = select(*_APP_COLUMNS).where(apps.c.id == app_id)
    if owner_id is not None:
        query = query.where(apps.c.owner_id == owner_id)
    return (await conn.execute(query)).first()


_LIVE = Prepared(select(apps).where(apps.c.id == bindparam("app_id"), apps.c.disabled_at.is_(None)))


async def live(conn: AsyncConnection, app_id: str) -> Row | None:
    """A live (not disabled) app with its app_key hash, for authorization requests."""
    return await fetch_one(conn, _LIVE, app_id=app_id)


def _openid_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the list of ``post_logout_redirect_uris`` as JSON (None stays NULL)."""
    uris = values.get("post_logout_redirect_uris")
    return {**values, "post_logout_redirect_uris": json.dumps(list(uris))} if uris is not None else dict(values)


async def update_app(conn: AsyncConnection, app_id: str, values: dict[str, Any], now: int) -> None:
    if "redirect_uris" in values:
        values = {**values, "redirect_uris": json.dumps(values["redirect_uris"])}
    values = _openid_values(values)
    await conn.execute(update(apps).where(apps.c.id == app_id).values(**values, updated_at=now))


async def disable(conn: AsyncConnection, app_id: str, now: int) -> None:
    await conn.execute(
        update(apps).where(apps.c.id == app_id, apps.c.disabled_at.is_(None)).values(disabled_at=now, updated_at=now)
    )


async def insert_key(conn: AsyncConnection, *, key_id: str, app_id: str, secret_hash: str, now: int) -> None:
    await conn.execute(insert(app_keys).values(id=key_id, app_id=app_id, secret_hash=secret_hash, created_at=now))


async def keys_of(conn: AsyncConnection, app_id: str) -> Sequence[Row]:
    query = (
        select(app_keys.c.id, app_keys.c.created_at, app_keys.c.revoked_at, app_keys.c.last_used_at)
        .where(app_keys.c.app_id == app_id)
        .order_by(app_keys.c.created_at, app_keys.c.id)
    )
    return (await conn.execute(query)).all()


async def revoke_key(conn: AsyncConnection, app_id: str, key_id: str, now: int) -> bool:
    """False when the app has no such key."""
    result = await conn.execute(
        update(app_keys)
        .where(app_keys.c.id == key_id, app_keys.c.app_id == app_id)
        .values(revoked_at=func.coalesce(app_keys.c.revoked_at, now))
    )
    return result.rowcount == 1


# With the key, the app's settings a grant needs of its client: its permissions (client_credentials),
# its refresh-token rotation (core.clients.rotates_refresh_tokens) and whether it requires DPoP
# (core.clients.OpenIDSettings.dpop_required, with its security profile), so that no grant reads the
# app again.
_LIVE_KEY_COLUMNS = (
    "secret_hash", "app_id", "permissions", "refresh_token_rotation", "security_profile", "dpop_bound_access_tokens",
)
_LIVE_KEY = Prepared(
    select(*(app_keys.c[name] if name in app_keys.c else apps.c[name] for name in _LIVE_KEY_COLUMNS))
    .join(apps, apps.c.id == app_keys.c.app_id)
    .where(
        app_keys.c.id == bindparam("key_id"),
        app_keys.c.revoked_at.is_(None),
        apps.c.disabled_at.is_(None),
        # An app registered for private_key_jwt (RFC 7523) authenticates by its assertions only:
        # its keys' secrets prove nothing (RFC 7591 §2, the registered method is the one).
        or_(apps.c.token_endpoint_auth_method.is_(None), apps.c.token_endpoint_auth_method != literal_column("'private_key_jwt'")),
    )
)


_LiveKeyRow = namedtuple("_LiveKeyRow", _LIVE_KEY_COLUMNS)  # as live_key's row


class LiveKeyAnd:
    """One SELECT (one round trip) of what ``live_key`` reads and what another one-row SELECT
    reads (a grant's code or refresh token), each LEFT JOINed to one row: one row whichever of
    them exists. Nothing is judged here: the caller verifies the key's secret before it looks at
    the other row."""

    def __init__(self, other: Any) -> None:
        key = _LIVE_KEY.statement.subquery("live_key")
        found = other.subquery("found")
        self._names = tuple(column.name for column in other.selected_columns)
        self._row = namedtuple("_FoundRow", self._names)  # type: ignore[misc]
        one = select(literal_column("1").label("one")).subquery("one")
        self._prepared = Prepared(
            select(
                *(key.c[name].label("key_" + name) for name in _LIVE_KEY_COLUMNS),
                *(found.c[name].label("found_" + name) for name in self._names),
            ).select_from(one.outerjoin(key, true()).outerjoin(found, true()))
        )

    async def fetch(self, conn: AsyncConnection, key_id: str, **params: Any) -> tuple[Any, Any]:
        """(the live key or None, the other row or None; it must have a NOT NULL first column)."""
        row = await fetch_one(conn, self._prepared, key_id=key_id, **params)
        width = len(_LIVE_KEY_COLUMNS)
        key = None if row[0] is None else _LiveKeyRow(*row[:width])
        found = None if row[width] is None else self._row(*row[width:])
        return key, found


async def live_key(conn: AsyncConnection, key_id: str) -> Row | None:
    """A key that is not revoked, of an app that is not disabled: its secret hash, its app, and the
    app's permissions and refresh-token settings (``_LIVE_KEY_COLUMNS``)."""
    return await fetch_one(conn, _LIVE_KEY, key_id=key_id)


async def record_assertion_jti(conn: AsyncConnection, app_id: str, jti: str, expires_at: int, now: int) -> bool:
    """Record the ``jti`` of an app's client assertion until ``expires_at``: False if it is recorded
    already and unexpired (a replay). The app's expired ones are deleted first."""
    await conn.execute(
        delete(client_assertion_jtis).where(
            client_assertion_jtis.c.app_id == app_id, client_assertion_jtis.c.expires_at <= now
        )
    )
    stmt = upsert(conn, client_assertion_jtis).values(app_id=app_id, jti=jti, expires_at=expires_at)
    result = await conn.execute(stmt.on_conflict_do_nothing(index_elements=["app_id", "jti"]))
    return result.rowcount == 1


async def registration_token_hash(conn: AsyncConnection, app_id: str) -> str | None:
    """The keyed hash of a live app's RFC 7592 registration access token (None: none, or no such live app)."""
    query = select(apps.c.registration_access_token_hash).where(apps.c.id == app_id, apps.c.disabled_at.is_(None))
    return (await conn.execute(query)).scalar()


async def clear_registration_token(conn: AsyncConnection, app_id: str) -> None:
    await conn.execute(update(apps).where(apps.c.id == app_id).values(registration_access_token_hash=None))


async def metadata_document_state(conn: AsyncConnection, app_id: str) -> Row | None:
    """Of an app whose id is its metadata document's URL: until when the document is fresh, and
    whether the app is disabled."""
    query = select(apps.c.metadata_document_expires_at, apps.c.disabled_at, apps.c.registration).where(apps.c.id == app_id)
    return (await conn.execute(query)).first()


async def save_metadata_document_app(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    """Insert the app a client ID metadata document describes, or bring its row up to date
    (never its ``disabled_at``, ``owner_id`` or ``created_at``)."""
    row = {**_openid_values(values), "redirect_uris": json.dumps(values["redirect_uris"])}
    kept = {"id", "owner_id", "created_at", "app_key_hash"}
    stmt = upsert(conn, apps).values(**row)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"], set_={name: stmt.excluded[name] for name in row if name not in kept}
        )
    )
