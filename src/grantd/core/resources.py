"""Resource indicators (RFC 8707) and the resources an operator registers.

A client names the protected resource it wants a token for with ``resource``: at the
authorization endpoint (``/oauth2/authorize``, and ``/oauth2/par``) one or more of them, recorded
with the code and then with its refresh tokens (the grant's resources); at the token endpoint,
for every grant, one, which becomes the access token's ``aud``, exactly as sent. Without ``resource`` a token keeps
the server's audience (``GRANTD_ACCESS_TOKEN_AUDIENCE``, else the issuer), and a request without
it pays nothing here.

The rules, all here:

- **A value** (RFC 8707 §2) is an absolute ``https`` URI (``http`` only on a loopback host, as for
  redirect URIs), with a host, without a fragment, user information, white space or control
  characters, at most ``MAX_LENGTH`` characters. A query is accepted (§2 discourages it but allows
  it); nothing is normalised: the audience is the string the client sent.
- **The policy** (``GRANTD_RESOURCE_POLICY``): ``any`` accepts every such value; ``registered``
  only the URI of a registered resource, and an access token for it carries only the granted
  permissions that resource accepts (narrowed, never refused as a whole unless none is left).
  The policy and the registrations are judged when the code is issued and again whenever a token
  is issued, so that a resource deleted or narrowed since stops at the next token.
- **A grant's resources**: the token request's ``resource`` must be one of them; without one, the
  token is for the grant's only resource, and a grant of several must name one. A grant made
  without ``resource`` is not bound to any: its token requests may name any resource the policy
  accepts. A refresh token keeps the grant's resources, whatever one of its tokens names: a
  refresh narrows, never widens. The device grant (``core.device``) has no authorization request
  to name them: the resource its token request names is its grant's only one.
- Anything else is ``invalid_target`` (RFC 8707 §2): 400 in RFC 6749 §5.2 JSON at the token and
  PAR endpoints, an error redirect at the authorization endpoint.
- A token for a resource is that resource's: grantd's own resources (UserInfo, the v2 user info)
  take only tokens of the server's audience (``core.introspection.live_user_claims``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from grantd.core import audit
from grantd.core import permissions as perms
from grantd.core.context import Context
from grantd.core.errors import Conflict, Forbidden, InvalidRequest, InvalidTarget, NotFound
from grantd.core.redirect_uris import LOOPBACK_HOSTS
from grantd.store import resources as store

PARAMETER = "resource"
REGISTERED = "registered"  # the policy that accepts registered resources only; the default is "any"
MAX_LENGTH = 2048
# The most resources one authorization request may name.
MAX_PER_REQUEST = 10
DESCRIPTION_MAX_LENGTH = 200
_FORBIDDEN_CHARS = re.compile(r"[\s\x00-\x1f\x7f<>\"\\^`{|}]")


@dataclass(frozen=True, slots=True)
class Resource:
    """A registered resource: its URI (a token's ``aud``) and the permissions it accepts."""

    uri: str
    permissions: tuple[str, ...]
    description: str
    created_at: int


class Implied(Exception):
    """A token request without ``resource`` for a grant of one resource, under the ``registered``
    policy: the grant decides to re-run as if the request had named it (``resource``), once its
    registration is read. Raised inside a spend, it leaves the code or refresh token unspent."""

    def __init__(self, resource: str) -> None:
        super().__init__(resource)
        self.resource = resource


# ---------------------------------------------------------------- values


def problem(value: str) -> str | None:
    """What makes ``value`` no resource indicator (RFC 8707 §2), or None."""
    if not value or len(value) > MAX_LENGTH:
        return f"a resource must be 1 to {MAX_LENGTH} characters"
    if _FORBIDDEN_CHARS.search(value):
        return "a resource may not contain white space or control characters"
    if "#" in value:
        return "a resource may not have a fragment (RFC 8707 §2)"
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "a resource must be an absolute URI"
    if parts.username is not None or parts.password is not None:
        return "a resource may not carry user information"
    scheme = parts.scheme.lower()
    if scheme == "https" and host and value[:8].lower() == "https://":
        return None
    if scheme == "http" and host in LOOPBACK_HOSTS and value[:7].lower() == "http://":
        return None
    if scheme in ("http", "https") and host:
        return "an http resource is accepted only on a loopback host (localhost, 127.0.0.1, [::1]); use https"
    return "a resource must be an absolute https URI (RFC 8707 §2)"


def parse(value: str) -> str:
    """``value`` when it is a resource indicator; InvalidTarget saying why otherwise."""
    wrong = problem(value)
    if wrong is not None:
        raise InvalidTarget(f"resource is invalid: {wrong}.")
    return value


def requested(values: Iterable[str]) -> tuple[str, ...]:
    """The resources of an authorization request (each once, in order); InvalidTarget for a bad one."""
    uris = tuple(dict.fromkeys(parse(value) for value in values))
    if len(uris) > MAX_PER_REQUEST:
        raise InvalidTarget(f"At most {MAX_PER_REQUEST} resources may be requested at once.")
    return uris


def from_parameter(value: str | None) -> tuple[str, ...]:
    """The resources of an authorization request's parameters (``value``: the ``resource``
    parameter, its repeats joined by ``REPEATED``); InvalidTarget for a bad one."""
    return requested(value.split(REPEATED)) if value else ()


async def named(ctx: Context, caller: Any, value: str) -> tuple[str, tuple[str, ...] | None]:
    """A token request's ``resource`` for a grant that spends a code or a refresh token
    (``caller``: its ``client_auth.Caller``), judged once the client is proven, so that the
    client's own errors come first: the URI, and what a token for it may carry (``accepted_by``)."""
    await caller.authenticate()
    uri = one(value)
    return uri, await accepted_by(ctx, uri)


def one(value: str) -> str:
    """A token request's ``resource``: one (a token's ``aud`` is exactly one URI), by ``parse``."""
    if REPEATED in value:
        raise InvalidTarget("One resource per token request: the access token's aud is exactly one URI.")
    return parse(value)


# A request's parameters are one value per name. ``resource`` may repeat (RFC 8707 §2): its
# values travel as one, joined by NUL, which no parameter holds (``grantd.forms`` refuses it in
# every value), so nothing a client sends is split where it did not repeat the parameter.
REPEATED = "\x00"
REPEATABLE = frozenset({PARAMETER})


def wire_pairs(params: Mapping[str, str]) -> list[tuple[str, str]]:
    """``params`` as the name-value pairs of a query or a form, ``resource`` repeated."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if name == PARAMETER:
            pairs.extend((name, uri) for uri in value.split(REPEATED))
        else:
            pairs.append((name, value))
    return pairs


# A grant's resources as stored with its code and refresh tokens: joined by a space, which no
# resource holds.
def stored(uris: Iterable[str]) -> str | None:
    return " ".join(uris) or None


def split(value: str | None) -> tuple[str, ...]:
    return tuple(value.split(" ")) if value else ()


# ---------------------------------------------------------------- the policy


def policy(ctx: Context) -> str:
    return ctx.settings.resource_policy


async def registered(ctx: Context, uri: str) -> Resource | None:
    async with ctx.db.read() as conn:
        row = await store.by_uri(conn, uri)
    return _resource(row) if row is not None else None


async def accepted_by(ctx: Context, uri: str) -> tuple[str, ...] | None:
    """What a token for ``uri`` may carry: None under the ``any`` policy (whatever was granted);
    under ``registered``, the permissions the registered resource accepts (one read);
    InvalidTarget when it is not registered."""
    if policy(ctx) != REGISTERED:
        return None
    resource = await registered(ctx, uri)
    if resource is None:
        raise InvalidTarget(f"{uri[:200]} is not a resource registered with this server.")
    return resource.permissions


async def admit(ctx: Context, uris: tuple[str, ...], permissions: Iterable[str]) -> None:
    """An authorization request's resources under the policy: under ``registered``, each one
    registered and accepting at least one of the permissions asked for (or its tokens would carry
    nothing). InvalidTarget otherwise."""
    if not uris or policy(ctx) != REGISTERED:
        return
    asked = tuple(permissions)
    for uri in uris:
        narrowed(asked, await accepted_by(ctx, uri), uri)


def narrowed(permissions: tuple[str, ...], accepted: tuple[str, ...] | None, uri: str) -> tuple[str, ...]:
    """The permissions a token for ``uri`` carries: all of ``permissions`` (``accepted`` None: the
    ``any`` policy), else those the resource accepts; InvalidTarget when none is left."""
    if accepted is None:
        return permissions
    kept = tuple(name for name in permissions if name in accepted)
    if not kept:
        raise InvalidTarget(f"{uri[:200]} accepts none of the permissions granted ({', '.join(permissions)}).")
    return kept


def audience_of(granted: str | None, asked: str | None) -> str | None:
    """The resource a token of a grant is for: ``asked`` (the token request's ``resource``, already
    parsed), which must be one of the grant's resources (``granted``, as stored) if it has any;
    else the grant's only resource; None for a grant without resources and a request without one.
    InvalidTarget otherwise (RFC 8707 §2: a refresh may narrow to one of them, never widen)."""
    if not granted:
        return asked
    uris = split(granted)
    if asked is None:
        if len(uris) == 1:
            return uris[0]
        raise InvalidTarget("The grant is for several resources: name the one this token is for with resource.")
    if asked not in uris:
        raise InvalidTarget("resource is not one of the resources the grant was authorized for.")
    return asked


# ---------------------------------------------------------------- the registered resources


def _resource(row: object) -> Resource:
    return Resource(
        uri=row.uri,  # type: ignore[attr-defined]
        permissions=perms.parse(row.permissions),  # type: ignore[attr-defined]
        description=row.description or "",  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )


def may_manage(ctx: Context, user_id: str | None) -> bool:
    """Whether a signed-in user may register and delete resources (``GRANTD_RESOURCE_ADMINS``);
    ``user_id`` None: the operator's command line, which always may."""
    return user_id is None or user_id in (admin.strip() for admin in ctx.settings.resource_admins.split(","))


def _manager(ctx: Context, user_id: str | None) -> str:
    if not may_manage(ctx, user_id):
        raise Forbidden("Only the server's operator registers resources (GRANTD_RESOURCE_ADMINS names who may).")
    return user_id or audit.OPERATOR


async def list_all(ctx: Context) -> list[Resource]:
    async with ctx.db.read() as conn:
        return [_resource(row) for row in await store.all_resources(conn)]


async def create(
    ctx: Context, uri: str, permissions: str, description: str = "", *, user_id: str | None = None,
    address: str | None = None,
) -> Resource:
    """Register a resource: its URI (by the rules of a ``resource`` value) and the permissions of
    the catalog it accepts. ``user_id`` None: the operator. Conflict when it is registered already."""
    actor = _manager(ctx, user_id)
    wrong = problem(uri)
    if wrong is not None:
        raise InvalidRequest(f"uri is invalid: {wrong}.", field="uri")
    accepted = perms.parse(permissions)
    ctx.catalog.require_known(accepted)
    description = description.strip()
    if len(description) > DESCRIPTION_MAX_LENGTH or not description.isprintable():
        raise InvalidRequest(
            f"description must be at most {DESCRIPTION_MAX_LENGTH} printable characters, one line.", field="description"
        )
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.insert_resource(tx, uri=uri, permissions=perms.join(accepted), description=description, now=now):
            raise Conflict("That resource is registered already.")
        await audit.record(
            ctx, tx, "resource_registered", actor=actor, user_id=user_id, address=address, now=now,
            resource=uri, permissions=list(accepted),
        )
    return Resource(uri, accepted, description, now)


async def delete(ctx: Context, uri: str, *, user_id: str | None = None, address: str | None = None) -> None:
    """Delete a registered resource: under the ``registered`` policy, no token is issued for it
    from then on (those issued live out their lifetime). NotFound when it is not registered."""
    actor = _manager(ctx, user_id)
    now = ctx.now()
    async with ctx.db.write() as tx:
        if not await store.delete_resource(tx, uri):
            raise NotFound("No resource is registered with that URI.")
        await audit.record(ctx, tx, "resource_deleted", actor=actor, user_id=user_id, address=address, now=now, resource=uri)
