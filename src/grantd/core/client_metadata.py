"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a ``client_id``
that is an https URL names a JSON document of the client's metadata, published at that URL.

Where a client is looked up (the authorization endpoint and its pages, pushed authorization
requests, the token, revocation and introspection endpoints), ``resolve`` first brings such a
client's app up to date: the document is fetched when the app has none yet or its copy is stale,
and the app (whose id is the URL, owned by ``store.apps.SELF_REGISTERED``) is saved from it. The
rules, each of the draft's:

- the URL (§3): https (http only with the development allowance below), a path, no fragment, no
  user information, no ``.`` or ``..`` segment, at most ``MAX_URL_LENGTH`` characters; its host
  not denied by the operator, and allowed when the operator lists allowed hosts
  (``GRANTD_CLIENT_ID_METADATA_DOCUMENT_*_HOSTS``);
- the fetch (§6, security considerations: server-side request forgery, denial of service): the
  safe fetcher of ``core.jwks`` — public addresses only (unless
  ``GRANTD_CLIENT_ID_METADATA_DOCUMENT_ALLOW_PRIVATE_ADDRESSES``, for development), short
  timeouts, no redirects, at most ``MAX_DOCUMENT_BYTES``;
- the document (§4): a JSON object whose ``client_id`` is the URL, character for character; its
  ``redirect_uris`` (matched as any app's: exactly), ``client_name``, ``logo_uri`` and the other
  settings checked by the rules of every app (``core.apps.check_app``); no shared secret:
  ``token_endpoint_auth_method`` ``none`` (a public client, the default) or ``private_key_jwt``
  with ``jwks`` or ``jwks_uri``, and no ``client_secret``;
- caching (§5): the copy is fresh for the answer's ``Cache-Control: max-age`` (bounded by
  ``MIN_CACHE_SECONDS`` and ``MAX_CACHE_SECONDS``; ``no-store`` or ``no-cache``: the minimum), else
  ``DEFAULT_CACHE_SECONDS``. The freshness is kept in the database, so every process shares it.

A client that cannot be resolved (a fetch that fails, a document refused) is ``invalid_client``,
never redirected to. An operator disables such an app as any other; its row keeps
``disabled_at`` however often the document is fetched again. The consent page shows the client's
host and says no one reviewed it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from grantd.core import apps, jwks
from grantd.core.clients import CONFIDENTIAL, PRIVATE_KEY_JWT, PUBLIC, TOKEN_AUTH_NONE
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidClient
from grantd.crypto.secrets import new_app_key
from grantd.store import apps as app_store

if TYPE_CHECKING:  # httpx is imported on the first fetch (core.jwks._http)
    import httpx

METADATA_DOCUMENT = "metadata_document"  # the apps' ``registration`` column
MAX_URL_LENGTH = 255
MAX_DOCUMENT_BYTES = 5 * 1024
DEFAULT_CACHE_SECONDS = 300
MIN_CACHE_SECONDS = 60
MAX_CACHE_SECONDS = 86400
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


def is_url(client_id: str) -> bool:
    """Whether ``client_id`` is a URL, which no app id of a developer's is: the one test the
    lookups of every other client pay."""
    return client_id.startswith(("https://", "http://"))


def applies(ctx: Context, client_id: str) -> bool:
    """Whether ``client_id`` names a metadata document (and the server accepts them)."""
    return is_url(client_id) and ctx.settings.client_id_metadata_documents


def supported(ctx: Context) -> bool:
    """RFC 8414's ``client_id_metadata_document_supported``."""
    return ctx.settings.client_id_metadata_documents


def _host_listed(host: str, hosts: list[str]) -> bool:
    for listed in hosts:
        listed = listed.lower()
        if host == listed or (listed.startswith(".") and (host.endswith(listed) or host == listed[1:])):
            return True
    return False


def check_url(ctx: Context, client_id: str) -> str:
    """The document's host when ``client_id`` may name one (§3 and the operator's host lists);
    InvalidClient otherwise."""
    if len(client_id) > MAX_URL_LENGTH:
        raise InvalidClient(f"A client_id URL may be at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(client_id)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidClient("The client_id URL is not a valid URL.") from None
    if not client_id.isascii() or re.search(r"[\s\x00-\x1f\x7f]", client_id):
        raise InvalidClient("The client_id URL may not contain white space or control characters.")
    # http only where the operator allows private addresses, for development (on a loopback host, say).
    https_only = not ctx.settings.client_id_metadata_document_allow_private_addresses
    if not host or parts.scheme != "https" and (https_only or parts.scheme != "http"):
        raise InvalidClient("A client_id URL must be https with a host.")
    if "#" in client_id or parts.username is not None or parts.password is not None:
        raise InvalidClient("A client_id URL may not have a fragment or user information.")
    segments = parts.path.split("/")
    if not parts.path or parts.path == "/" or any(segment in (".", "..") for segment in segments):
        raise InvalidClient("A client_id URL must have a path, without . or .. segments.")
    settings = ctx.settings
    if _host_listed(host, settings.client_id_metadata_document_denied_hosts):
        raise InvalidClient("This server does not accept client ID metadata documents from that host.")
    allowed = settings.client_id_metadata_document_allowed_hosts
    if allowed and not _host_listed(host, allowed):
        raise InvalidClient("This server does not accept client ID metadata documents from that host.")
    return host


def cache_seconds(headers: httpx.Headers) -> int:
    """How long a fetched document is fresh, by its answer's ``Cache-Control`` (bounded)."""
    control = headers.get("cache-control", "")
    if _NO_CACHE.search(control):
        return MIN_CACHE_SECONDS
    found = _MAX_AGE.search(control)
    if found is None:
        return DEFAULT_CACHE_SECONDS
    return max(MIN_CACHE_SECONDS, min(MAX_CACHE_SECONDS, int(found.group(1))))


def _document(client_id: str, body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: nested too deep
        raise InvalidClient("The client ID metadata document is not JSON.") from None
    if not isinstance(document, dict):
        raise InvalidClient("The client ID metadata document must be a JSON object.")
    if document.get("client_id") != client_id:
        raise InvalidClient("The client ID metadata document must name its own URL as client_id.")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise InvalidClient("A client ID metadata document may not hold a client_secret.")
    return document


def check_document(ctx: Context, client_id: str, document: dict[str, Any]) -> apps.CheckedApp:
    """The app's settings a document describes, by the rules of every app; InvalidClient otherwise."""
    method = document.get("token_endpoint_auth_method") or TOKEN_AUTH_NONE
    if method not in (TOKEN_AUTH_NONE, PRIVATE_KEY_JWT):
        raise InvalidClient("A client ID metadata document's token_endpoint_auth_method must be none or private_key_jwt.")
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
        raise InvalidClient("The client ID metadata document must list its redirect_uris.")
    brand = {name: document.get(name) for name in apps.BRANDING_FIELDS if name in document}
    if any(not isinstance(value, str) for name, value in brand.items() if value is not None) or (
        document.get("client_name") is not None and not isinstance(document["client_name"], str)
    ):
        raise InvalidClient("The client ID metadata document's client_name, logo_uri and other URLs must be strings.")
    openid = {"token_endpoint_auth_method": method}
    for name in ("jwks", "jwks_uri", "post_logout_redirect_uris"):
        if document.get(name) is not None:
            openid[name] = document[name]
    try:
        return apps.check_app(
            ctx,
            document.get("client_name") or urlsplit(client_id).hostname or client_id,
            uris,
            ",".join(ctx.catalog.descriptions),
            PUBLIC if method == TOKEN_AUTH_NONE else CONFIDENTIAL,
            brand=brand,
            openid=openid,
        )
    except GrantdError as exc:
        fields = apps.field_errors(exc)
        where = f" ({next(iter(fields))})" if fields else ""
        raise InvalidClient(f"The client ID metadata document is refused{where}: {exc.message}") from None


async def resolve(ctx: Context, client_id: str) -> None:
    """Bring the app of a client_id URL up to date (see the module's words); nothing for any
    other client_id. InvalidClient when its document cannot be had or is refused."""
    if not applies(ctx, client_id):
        return
    check_url(ctx, client_id)
    now = ctx.now()
    async with ctx.db.read() as conn:
        state = await app_store.metadata_document_state(conn, client_id)
    if state is not None and state.metadata_document_expires_at is not None and state.metadata_document_expires_at > now:
        return
    if state is not None and state.registration != METADATA_DOCUMENT:
        return  # not an app of a metadata document (an id no developer's app can have, but never overwrite one)
    fresh_for, document = await jwks.fetch(
        client_id,
        allow_private=ctx.settings.client_id_metadata_document_allow_private_addresses,
        limit=MAX_DOCUMENT_BYTES,
        what="The client ID metadata document",
        read=lambda body, headers: (cache_seconds(headers), _document(client_id, body)),
    )
    checked = check_document(ctx, client_id, document)
    async with ctx.db.write() as tx:
        await app_store.save_metadata_document_app(
            tx,
            {
                **checked.columns(),
                "id": client_id,
                "owner_id": app_store.SELF_REGISTERED,
                "app_key_hash": ctx.hasher.hash(new_app_key()),  # no app_key: the Neucron calls cannot name it
                "created_at": now,
                "updated_at": now,
                "registration": METADATA_DOCUMENT,
                "application_type": None,
                "metadata_document_expires_at": now + fresh_for,
            },
        )
