"""Who is calling the token endpoints: an app proven by one of its keys, or a public client.

A key secret names its key (``gks_<key id>_…``), so OAuth 2.0 clients that send only
``client_id`` and ``client_secret`` are authenticated with the same single lookup as the
Neucron ``key_id`` + ``key_secret`` pair.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from grantd.core.context import Context
from grantd.core.errors import InvalidClient
from grantd.crypto.secrets import key_id_of_secret
from grantd.store import apps as app_store

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

    @property
    def is_public(self) -> bool:
        return self.key_id is None


_WRONG_KEY = "Unknown key, wrong key secret, or the key or its app is disabled."


async def authenticate_key(ctx: Context, key_id: str, key_secret: str) -> Client:
    """An app proven by a live key of it; InvalidClient for a wrong, revoked or disabled-app key."""
    async with ctx.db.read() as conn:
        key = await app_store.live_key(conn, key_id)
    return verified_key(ctx, key_id, key_secret, key)


def verified_key(ctx: Context, key_id: str, key_secret: str, key: Any) -> Client:
    """The app proven by ``key`` (a live key's row as ``store.apps.live_key`` reads it, or None), if
    ``key_secret`` is its secret; InvalidClient otherwise."""
    if key is None or not ctx.hasher.verify(key_secret, key.secret_hash):
        raise InvalidClient(_WRONG_KEY)
    return Client(key.app_id, key_id, key.permissions)


def key_named_by(client_secret: str) -> str:
    """The key id a client secret names; InvalidClient if it names none."""
    key_id = key_id_of_secret(client_secret)
    if key_id is None:
        raise InvalidClient(_WRONG_KEY)
    return key_id


def same_client(client: Client, client_id: str | None) -> Client:
    """``client``, if ``client_id`` (sent beside its secret) is absent or names its app; else InvalidClient."""
    if client_id is not None and client_id != client.app_id:
        raise InvalidClient(_WRONG_KEY)
    return client


async def authenticate_client(ctx: Context, client_id: str | None, client_secret: str | None) -> Client:
    """OAuth 2.0 client authentication (RFC 6749 §2.3): a confidential client by its secret, a public one by id."""
    if client_secret:
        client = await authenticate_key(ctx, key_named_by(client_secret), client_secret)
        return same_client(client, client_id)
    if not client_id:
        raise InvalidClient("Client authentication is required.")
    async with ctx.db.read() as conn:
        app = await app_store.live(conn, client_id)
    if app is None or app.client_type != PUBLIC:
        raise InvalidClient("Unknown client, or the client must authenticate with its secret.")
    return Client(client_id, None)
