"""Client authentication (RFC 6749 §2.3): one type per method, each a value.

A dialect turns what a request sends into one of these values (``from_credentials``, or a
``KeyPair`` for the Neucron token request), and a use case asks it to prove the client:

- ``await auth.authenticate(ctx)`` reads what it needs and returns the ``Client``, or raises
  ``InvalidClient``;
- ``auth.key_id`` names the app key a store read may fetch together with what the request is
  about (one SELECT instead of two), and ``auth.proven(ctx, key_row)`` then judges that row as
  ``authenticate`` would have. ``key_id`` is None for a method that proves itself without a key.

The methods: ``ClientSecret`` (a key secret by HTTP Basic, ``client_secret_basic``, in the form,
``client_secret_post``, or in Neucron v2's query, ``neucron_v2_query``; the secret names its key,
``gks_<key id>_…``, so one lookup finds it), ``KeyPair`` (the Neucron ``key_id`` +
``key_secret``), ``PrivateKeyJwt`` (RFC 7523 ``private_key_jwt``: a JWT the app signs with a key
of its ``jwks`` or ``jwks_uri``; ``key_id`` None, so every read goes through ``authenticate``),
``PublicClient`` (a public client's bare ``client_id``, method ``none``), and ``Unauthenticated``.
An app's registered ``token_endpoint_auth_method`` is the one it may use (RFC 7591 §2): a
private_key_jwt app's key secrets prove nothing, and only such an app's assertions are judged.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jwt

from grantd.core import client_metadata, endpoints, jwks
from grantd.core.clients import PRIVATE_KEY_JWT, PUBLIC, Client, OpenIDSettings, rotates_refresh_tokens
from grantd.core.context import Context
from grantd.core.errors import InvalidClient, InvalidRequest
from grantd.crypto.secrets import key_id_of_secret
from grantd.store import apps as app_store

CLIENT_SECRET_BASIC = "client_secret_basic"
CLIENT_SECRET_POST = "client_secret_post"
NONE = "none"
# Neucron v2's token request (a GET): client_id and client_secret in the query, as client_secret_post
# has them in the form. Not an RFC 8414 method: /oauth2/token does not take it.
NEUCRON_V2_QUERY = "neucron_v2_query"
# RFC 8414's *_endpoint_auth_methods_supported: the methods a confidential client proves itself by,
# and with NONE those the token and revocation endpoints take.
SECRET_METHODS = (CLIENT_SECRET_BASIC, CLIENT_SECRET_POST)
CONFIDENTIAL_METHODS = (*SECRET_METHODS, PRIVATE_KEY_JWT)
TOKEN_ENDPOINT_METHODS = (*CONFIDENTIAL_METHODS, NONE)
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# RFC 7523 §3: an assertion may be valid for at most this long (exp - iat, and exp - now), with
# LEEWAY seconds of clock skew either way.
ASSERTION_MAX_LIFETIME = 300
LEEWAY = 30

_WRONG_KEY = "Unknown key, wrong key secret, or the key or its app is disabled."


class ClientAuthentication(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def key_id(self) -> str | None: ...

    async def authenticate(self, ctx: Context) -> Client: ...

    def proven(self, ctx: Context, key: Any) -> Client: ...


def verified_key(ctx: Context, key_id: str, key_secret: str, key: Any) -> Client:
    """The app proven by ``key`` (a live key's row as ``store.apps.live_key`` reads it, or None), if
    ``key_secret`` is its secret; InvalidClient otherwise. (A key of an app registered for
    private_key_jwt is never live: ``store.apps.live_key`` reads none.)"""
    if key is None or not ctx.hasher.verify(key_secret, key.secret_hash):
        raise InvalidClient(_WRONG_KEY)
    return Client(
        key.app_id, key_id, key.permissions, dpop_required=OpenIDSettings.dpop_required_of(key),
        rotates_refresh_tokens=rotates_refresh_tokens(key.refresh_token_rotation, key.security_profile),
    )


async def _live_key(ctx: Context, key_id: str) -> Any:
    async with ctx.db.read() as conn:
        return await app_store.live_key(conn, key_id)


class KeyPair(NamedTuple):
    """The Neucron token request's ``key_id`` and ``key_secret``: a live key of a live app."""

    key_id: str
    key_secret: str

    method = "neucron_key_pair"

    async def authenticate(self, ctx: Context) -> Client:
        return self.proven(ctx, await _live_key(ctx, self.key_id))

    def proven(self, ctx: Context, key: Any) -> Client:
        return verified_key(ctx, self.key_id, self.key_secret, key)


class ClientSecret:
    """A confidential client's secret (``client_secret_basic`` or ``client_secret_post``), with the
    ``client_id`` sent beside it, if any, which must then name the key's app. The key the secret
    names is read from it once."""

    __slots__ = ("client_id", "secret", "method", "_key_id")

    def __init__(self, client_id: str | None, secret: str, method: str = CLIENT_SECRET_POST) -> None:
        self.client_id, self.secret, self.method = client_id, secret, method
        self._key_id = key_id_of_secret(secret)

    @property
    def key_id(self) -> str:
        """The key the secret names; InvalidClient if it names none."""
        if self._key_id is None:
            raise InvalidClient(_WRONG_KEY)
        return self._key_id

    async def authenticate(self, ctx: Context) -> Client:
        key_id = self.key_id
        return self._same_client(verified_key(ctx, key_id, self.secret, await _live_key(ctx, key_id)))

    def proven(self, ctx: Context, key: Any) -> Client:
        return self._same_client(verified_key(ctx, self.key_id, self.secret, key))

    def _same_client(self, client: Client) -> Client:
        if self.client_id is not None and self.client_id != client.app_id:
            raise InvalidClient(_WRONG_KEY)
        return client


class PublicClient(NamedTuple):
    """A public client (RFC 6749 §2.1) naming itself by ``client_id`` alone: method ``none``."""

    client_id: str

    method = NONE
    key_id = None

    async def authenticate(self, ctx: Context) -> Client:
        if client_metadata.is_url(self.client_id):  # a client ID metadata document's URL
            await client_metadata.resolve(ctx, self.client_id)
        async with ctx.db.read() as conn:
            app = await app_store.live(conn, self.client_id)
        if app is None or app.client_type != PUBLIC:
            raise InvalidClient("Unknown client, or the client must authenticate with its secret.")
        settings = OpenIDSettings.of(app)
        return Client(
            self.client_id, None, app.permissions, dpop_required=settings.dpop_required,
            rotates_refresh_tokens=settings.rotates_refresh_tokens,
        )

    def proven(self, ctx: Context, key: Any) -> Client:  # no key to judge: key_id is None
        raise InvalidClient("Unknown client, or the client must authenticate with its secret.")


class PrivateKeyJwt:
    """RFC 7523 §2.2 client authentication: a JWT signed by one of the app's keys (its ``jwks`` or
    ``jwks_uri``), for an app registered with ``token_endpoint_auth_method`` private_key_jwt. The
    checks of §3: ``iss`` and ``sub`` the client_id, ``aud`` this server (the issuer, or the URL
    of an endpoint where clients authenticate: ``endpoints.assertion_audiences``), a bounded ``exp``, a ``jti`` never seen before (recorded until its ``exp``,
    in the database: every process refuses a replay), and an asymmetric signature (``ALGORITHMS``)."""

    __slots__ = ("client_id", "assertion")

    method = PRIVATE_KEY_JWT
    key_id = None

    def __init__(self, client_id: str | None, assertion: str) -> None:
        self.client_id, self.assertion = client_id, assertion

    def claimed(self) -> str | None:
        """Whom the assertion says it is (unverified: for the rate limit's bucket only)."""
        try:
            sub = jwt.decode(self.assertion, options={"verify_signature": False}).get("sub")
        except (jwt.PyJWTError, ValueError, AttributeError):
            return self.client_id
        return sub if isinstance(sub, str) else self.client_id

    async def authenticate(self, ctx: Context) -> Client:
        refused = InvalidClient("The client assertion is invalid.")
        try:
            header = jwt.get_unverified_header(self.assertion)
            unverified = jwt.decode(self.assertion, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError):
            raise refused from None
        alg, kid, sub = header.get("alg"), header.get("kid"), unverified.get("sub")
        if alg not in jwks.ALGORITHMS or (kid is not None and not isinstance(kid, str)):
            raise InvalidClient(f"The client assertion must be signed with one of: {', '.join(jwks.ALGORITHMS)}.")
        if not isinstance(sub, str) or unverified.get("iss") != sub:
            raise InvalidClient("The client assertion's iss and sub must both be the client_id.")
        if self.client_id is not None and self.client_id != sub:
            raise InvalidClient("client_id differs from the client assertion's sub.")
        if client_metadata.is_url(sub):  # a client ID metadata document's URL
            await client_metadata.resolve(ctx, sub)
        async with ctx.db.read() as conn:
            app = await app_store.live(conn, sub)
        settings = OpenIDSettings.of(app) if app is not None else None
        if settings is None or settings.auth_method(app.client_type) != PRIVATE_KEY_JWT:
            raise InvalidClient("Unknown client, or the client is not registered for private_key_jwt.")
        if settings.jwks:
            keys_text = settings.jwks
        elif settings.jwks_uri:
            allow = ctx.settings.jwks_uri_allow_private_addresses
            keys_text = await jwks.CACHE.get(settings.jwks_uri, allow_private=allow)
            if not jwks.candidates(keys_text, kid, alg):  # a key the app rotated in since: fetch again, not often
                keys_text = await jwks.CACHE.get(settings.jwks_uri, allow_private=allow, refresh=True)
        else:
            raise InvalidClient("The client has no keys (jwks or jwks_uri).")
        issuer = ctx.settings.issuer
        # RFC 7523 §3 item 3, RFC 9126 §2: the issuer, or the URL of an endpoint where clients authenticate
        # (token, revocation, introspection, pushed authorization request, device authorization);
        # under FAPI 2.0 (its Security Profile §5.3.2.1) the issuer alone, as a string.
        audiences = [issuer] if settings.fapi2 else endpoints.assertion_audiences(issuer)
        claims = None
        for key in jwks.candidates(keys_text, kid, alg):
            try:
                claims = jwt.decode(
                    self.assertion, key, algorithms=[alg], audience=audiences, issuer=sub, leeway=LEEWAY,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise InvalidClient(f"The client assertion is invalid: {exc}.") from None
        if claims is None:
            raise InvalidClient("The client assertion is not signed by a key of the client.")
        if settings.fapi2 and claims["aud"] != issuer:
            raise InvalidClient("The client assertion's aud must be the issuer, as a string (FAPI 2.0).")
        now, exp, iat, jti = ctx.now(), claims["exp"], claims.get("iat"), claims["jti"]
        if not isinstance(exp, int) or exp > now + ASSERTION_MAX_LIFETIME + LEEWAY:
            raise InvalidClient(f"The client assertion may be valid for at most {ASSERTION_MAX_LIFETIME} seconds.")
        if iat is not None and (not isinstance(iat, (int, float)) or exp - iat > ASSERTION_MAX_LIFETIME):
            raise InvalidClient(f"The client assertion may be valid for at most {ASSERTION_MAX_LIFETIME} seconds.")
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise InvalidClient("The client assertion's jti must be a string of 1 to 255 characters.")
        async with ctx.db.write() as tx:
            fresh = await app_store.record_assertion_jti(tx, sub, jti, exp + LEEWAY, now)
        if not fresh:
            raise InvalidClient("The client assertion was used already (its jti is not new).")
        return Client(
            sub, None, app.permissions, by_assertion=True, dpop_required=settings.dpop_required,
            rotates_refresh_tokens=settings.rotates_refresh_tokens,
        )

    def proven(self, ctx: Context, key: Any) -> Client:  # no key to judge: key_id is None
        raise InvalidClient("The client assertion is proven by authenticate.")


class Unauthenticated(NamedTuple):
    """No client authentication at all."""

    method = NONE
    key_id = None

    async def authenticate(self, ctx: Context) -> Client:
        raise InvalidClient("Client authentication is required.")

    def proven(self, ctx: Context, key: Any) -> Client:
        raise InvalidClient("Client authentication is required.")


class Caller:
    """The caller's half of a spend the store runs (``store.tokens.Spender``): it proves the client
    with ``auth`` when the store asks, and keeps the ``Client`` for the rest of the request. A
    grant's spend subclasses it and adds ``issue``."""

    __slots__ = ("ctx", "auth", "key_id", "client")

    def __init__(self, ctx: Context, auth: ClientAuthentication) -> None:
        self.ctx, self.auth = ctx, auth
        self.key_id = auth.key_id  # InvalidClient for a secret that names no key, before anything is read
        self.client: Client | None = None

    async def authenticate(self) -> str:
        if self.client is None:  # proven once per request, however often it is asked (a resource named first)
            self.client = await self.auth.authenticate(self.ctx)
        return self.client.app_id

    def proven(self, key: Any) -> str:
        self.client = self.auth.proven(self.ctx, key)
        return self.client.app_id


async def missing(ctx: Context, auth: ClientAuthentication, parameter: str) -> Any:
    """A request without a ``parameter`` it needs: refused after the client's authentication, so
    that the client's own errors come first."""
    await auth.authenticate(ctx)
    raise InvalidRequest(f"{parameter} is required.")


def from_credentials(
    basic: tuple[str, str] | None,
    client_id: str | None,
    client_secret: str | None,
    assertion_type: str | None = None,
    assertion: str | None = None,
) -> ClientAuthentication:
    """The one method a request uses (RFC 6749 §2.3.1): HTTP Basic (``basic``: its user name and
    password, decoded), else ``client_id``/``client_secret`` from the form, else a client
    assertion (RFC 7523 §2.2: ``client_assertion_type`` jwt-bearer and ``client_assertion``).
    Two at once is refused; a ``client_id`` in the form beside Basic or an assertion must name the
    same client. A secret that is empty is none: the client is then public, named by its id."""
    if assertion_type is not None or assertion is not None:
        if basic is not None or client_secret:
            raise InvalidRequest("Use one client authentication method, not a client assertion and a secret.")
        if assertion_type != JWT_BEARER:
            raise InvalidClient(f"client_assertion_type must be {JWT_BEARER}.")
        if not assertion:
            raise InvalidClient("client_assertion is required with client_assertion_type.")
        return PrivateKeyJwt(client_id, assertion)
    method = CLIENT_SECRET_POST
    if basic is not None:
        if client_secret is not None:
            raise InvalidRequest("Use one client authentication method, not both Basic and client_secret.")
        if client_id is not None and client_id != basic[0]:
            raise InvalidClient("client_id differs from the authenticated client.")
        (client_id, client_secret), method = basic, CLIENT_SECRET_BASIC
    if client_secret:
        return ClientSecret(client_id, client_secret, method)
    if client_id:
        return PublicClient(client_id)
    return Unauthenticated()
