from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import BigInteger, ColumnElement, and_, bindparam, func, insert, select, text, update
from sqlalchemy.engine import Row

from grantd.store.apps import LiveKeyAnd
from grantd.store.db import fetch_all, fetch_one, insert_from, later_of, run, upsert
from grantd.store.prepared import Prepared
from grantd.store.schema import (
    app_keys, apps, authorization_codes, device_codes, refresh_tokens, revoked_access_tokens, revoked_families,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from grantd.store.db import Database


# The columns a new refresh token's row is written with (here, and by the one-statement grants of
# store.codes on PostgreSQL). Access tokens have no row (core.access_token).
REFRESH_COLUMNS = (
    "token_hash", "code_hash", "app_id", "user_id", "scope", "access_jti", "issued_at", "expires_at", "auth_time", "session_jti",
    "dpop_jkt", "resources", "key_id", "amr",
)



class Issue(NamedTuple):
    """What spending a single-use row issues with it: the new access token's particulars
    (``core.access_token.row``: signed, never stored), and the rows written with the spend, a
    refresh token's and an audit event's, as ``REFRESH_COLUMNS`` and ``store.audit.insert_event``
    name their columns. Which may be None is each spend's to say (``store.codes.spend``, ``rotate``)."""

    access: dict[str, Any]
    refresh: dict[str, Any] | None
    audit: dict[str, Any] | None


class Spender(Protocol):
    """The caller of a spend (a code's redemption, a refresh token's rotation), as the use case
    describes it to the store, which chooses how the spend runs on its database:

    - ``key_id``: a key to read in the same round trip as the row, to prove the caller with
      (``proven``); None when the caller proves itself otherwise (``authenticate``);
    - ``authenticate()`` / ``proven(key_row)``: the caller's app id, or an exception;
    - ``issue(row)``: the rules of the spend, judged on the row; what to write with it, or an
      exception, which leaves the row unspent and nothing written.
    """

    @property
    def key_id(self) -> str | None: ...

    async def authenticate(self) -> str: ...

    def proven(self, key: Any) -> str: ...

    def issue(self, row: Any) -> Issue: ...


class Rotator(Spender, Protocol):
    """The caller of a refresh token's rotation (``rotate``): a ``Spender`` that also says, once
    proven, whether its app rotates refresh tokens (``rotates``) or keeps them."""

    @property
    def rotates(self) -> bool: ...


INSERT_REFRESH = Prepared(insert(refresh_tokens).values({name: bindparam(name) for name in REFRESH_COLUMNS}))


async def _revoke_refresh(conn: AsyncConnection, now: int, condition: ColumnElement[bool]) -> None:
    """Revoke the refresh tokens ``condition`` selects, their rows locked first by hash: a fixed
    order, so that concurrent revocations of overlapping sets (many requests replaying one refresh
    token at once) do not deadlock on PostgreSQL, each UPDATE locking the same rows in whatever
    order its scan met them. (SQLite ignores FOR UPDATE; its writers queue.)"""
    key = refresh_tokens.c.token_hash
    await conn.execute(select(key).where(condition).order_by(key).with_for_update())
    await conn.execute(update(refresh_tokens).where(condition, refresh_tokens.c.revoked_at.is_(None)).values(revoked_at=now))


async def deny_families(conn: AsyncConnection, code_hashes: Sequence[str], until: int) -> None:
    """Put the families ``code_hashes`` on the deny-list (``revoked_families``) until ``until``
    (revocation time + access_token_ttl: when the last access token they could have issued has
    expired), or later if they are on it already: introspection then finds every access token
    whose ``family`` claim names one of them inactive. Written in one statement, in hash order
    (the same lock order for every writer)."""
    hashes = sorted(set(code_hashes))
    if not hashes:
        return
    stmt = upsert(conn, revoked_families).values([{"code_hash": h, "expires_at": until} for h in hashes])
    stmt = stmt.on_conflict_do_update(
        index_elements=[revoked_families.c.code_hash],
        set_={"expires_at": later_of(stmt.excluded.expires_at, revoked_families.c.expires_at)},
    )
    await conn.execute(stmt)


async def revoke_family(conn: AsyncConnection, code_hash: str, now: int, until: int) -> None:
    """Revoke every access and refresh token descended from one authorization code: its refresh
    tokens' rows, and the family on the deny-list until ``until`` (``deny_families``).

    On PostgreSQL, revocations of one family first queue on a transaction-scoped advisory lock
    named after it: row locks alone, however ordered, can still close a cycle with a rotation
    queued on the family's refresh token between two revokers.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": family_lock_key(code_hash)})
    await _revoke_refresh(conn, now, refresh_tokens.c.code_hash == code_hash)
    await deny_families(conn, [code_hash], until)


def family_lock_key(code_hash: str) -> int:
    """The family's advisory lock key: the first 64 bits of its code hash (= _FAMILY_LOCK_KEY in SQL)."""
    return int.from_bytes(bytes.fromhex(code_hash[:16]), "big", signed=True)


# The family's advisory lock key computed in SQL, as family_lock_key computes it.
_FAMILY_LOCK_KEY = "('x' || substr(code_hash, 1, 16))::bit(64)::bigint"


# Built once: it runs on every refresh-token rotation on PostgreSQL.
_LOCK_FAMILY = Prepared(
    text(f"SELECT pg_advisory_xact_lock({_FAMILY_LOCK_KEY}) FROM refresh_tokens WHERE token_hash = :h")
)


async def lock_refresh_family(conn: AsyncConnection, token_hash: str) -> None:
    """On PostgreSQL, queue for the advisory lock of the refresh token's family before touching it.

    A rotation that loses its race keeps the row lock it took to re-check the token (PostgreSQL
    locks the newest version before re-evaluating the WHERE clause), so a loser that went on to
    revoke the family would hold that row while queueing for the family's lock: a cycle. Taking
    the family's lock first serialises every writer of one family. SQLite's writers already queue.
    """
    if conn.dialect.name == "postgresql":
        await run(conn, _LOCK_FAMILY, h=token_hash)


async def revoke_session_families(
    conn: AsyncConnection, user_id: str, now: int, until: int, *, session_jti: str | None = None,
    keep_jti: str | None = None,
) -> None:
    """Revoke every family of the user's that is bound to a browser session which has just ended
    (an OpenID grant without offline_access): ``session_jti``'s, or every session's but
    ``keep_jti``; and void the unredeemed codes bound to them."""
    bound = [refresh_tokens.c.user_id == user_id, refresh_tokens.c.session_jti.isnot(None), refresh_tokens.c.revoked_at.is_(None)]
    codes_bound = [authorization_codes.c.user_id == user_id, authorization_codes.c.session_jti.isnot(None)]
    if session_jti is not None:
        bound.append(refresh_tokens.c.session_jti == session_jti)
        codes_bound.append(authorization_codes.c.session_jti == session_jti)
    elif keep_jti is not None:
        bound.append(refresh_tokens.c.session_jti != keep_jti)
        codes_bound.append(authorization_codes.c.session_jti != keep_jti)
    await conn.execute(
        update(authorization_codes).where(*codes_bound, authorization_codes.c.redeemed_at.is_(None)).values(redeemed_at=now)
    )
    families = (await conn.execute(select(refresh_tokens.c.code_hash).where(*bound).distinct())).scalars().all()
    for code_hash in sorted(families):
        await revoke_family(conn, code_hash, now, until)


async def rebind_session(conn: AsyncConnection, user_id: str, old_jti: str, new_jti: str) -> None:
    """The user's grants and unredeemed codes bound to browser session ``old_jti`` are bound to
    ``new_jti`` instead: the session the same browser signed in again with, which replaces it."""
    await conn.execute(
        update(authorization_codes)
        .where(
            authorization_codes.c.user_id == user_id,
            authorization_codes.c.session_jti == old_jti,
            authorization_codes.c.redeemed_at.is_(None),
        )
        .values(session_jti=new_jti)
    )
    await conn.execute(
        update(refresh_tokens)
        .where(
            refresh_tokens.c.user_id == user_id,
            refresh_tokens.c.session_jti == old_jti,
            refresh_tokens.c.revoked_at.is_(None),
        )
        .values(session_jti=new_jti)
    )


async def _families_of(conn: AsyncConnection, now: int, until: int, user_id: str, app_id: str | None) -> list[str]:
    """The families of the user's (to ``app_id``, or to every app) that may still have an unexpired
    access token: those with a refresh token that could have issued one within access_token_ttl
    (``until - now``), and codes and device codes redeemed within it (a code redeemed without a
    refresh token is a family of its own)."""
    since = now - (until - now)
    refresh = [refresh_tokens.c.user_id == user_id, refresh_tokens.c.expires_at > since]
    codes = [authorization_codes.c.user_id == user_id, authorization_codes.c.redeemed_at >= since]
    devices = [device_codes.c.user_id == user_id, device_codes.c.redeemed_at >= since]
    if app_id is not None:
        refresh.append(refresh_tokens.c.app_id == app_id)
        codes.append(authorization_codes.c.app_id == app_id)
        devices.append(device_codes.c.app_id == app_id)
    found: set[str] = set()
    for query in (
        select(refresh_tokens.c.code_hash).where(*refresh).distinct(),
        select(authorization_codes.c.code_hash).where(*codes),
        select(device_codes.c.device_code_hash).where(*devices),
    ):
        found.update((await conn.execute(query)).scalars().all())
    return sorted(found)


async def revoke_user_app(conn: AsyncConnection, user_id: str, app_id: str, now: int, until: int) -> None:
    """Revoke every token a user's grant to an app has produced: its refresh tokens, and its
    families on the deny-list until ``until``."""
    families = await _families_of(conn, now, until, user_id, app_id)
    await _revoke_refresh(conn, now, and_(refresh_tokens.c.user_id == user_id, refresh_tokens.c.app_id == app_id))
    await deny_families(conn, families, until)


async def revoke_user(conn: AsyncConnection, user_id: str, now: int, until: int) -> None:
    """Revoke every token issued for the user, to any app (an account locked or deleted): their
    refresh tokens, and their families on the deny-list until ``until`` (rows that name no user)."""
    families = await _families_of(conn, now, until, user_id, None)
    await _revoke_refresh(conn, now, refresh_tokens.c.user_id == user_id)
    await deny_families(conn, families, until)


async def revoke_app(conn: AsyncConnection, app_id: str, now: int) -> None:
    """Revoke every token issued to the app (before it is enabled again: none of them comes back):
    its refresh tokens, and every access token issued at or before ``now``
    (``apps.tokens_revoked_at``; one issued in the same second is void too: whole seconds, failing
    closed)."""
    await _revoke_refresh(conn, now, refresh_tokens.c.app_id == app_id)
    await conn.execute(update(apps).where(apps.c.id == app_id).values(tokens_revoked_at=now))


# An access token's state: its app (disabled, tokens revoked until), the key its ``key_id`` claim
# names (``token_key_id``: found, revoked), and whether its family and its jti are on the
# deny-lists. One SELECT, each row by primary key; the app's row is always there for a token of an
# app that exists. Judged by core.introspection.access_is_live.
_ACCESS_STATE = Prepared(
    select(
        apps.c.id.label("app_id"),
        apps.c.disabled_at.label("app_disabled_at"),
        apps.c.tokens_revoked_at,
        app_keys.c.id.label("key_id"),
        app_keys.c.revoked_at.label("key_revoked_at"),
        revoked_families.c.code_hash.label("family_revoked"),
        revoked_access_tokens.c.jti.label("jti_revoked"),
    )
    .select_from(
        apps.outerjoin(
            app_keys, and_(app_keys.c.id == bindparam("token_key_id", type_=app_keys.c.id.type), app_keys.c.app_id == apps.c.id)
        )
        .outerjoin(revoked_families, revoked_families.c.code_hash == bindparam("family", type_=revoked_families.c.code_hash.type))
        .outerjoin(revoked_access_tokens, revoked_access_tokens.c.jti == bindparam("jti", type_=revoked_access_tokens.c.jti.type))
    )
    .where(apps.c.id == bindparam("app_id", type_=apps.c.id.type))
)


def _state_params(claims: dict[str, Any]) -> dict[str, Any]:
    """What ``_ACCESS_STATE`` reads for a token, from its claims (a claim of the wrong type reads as none)."""
    def text_claim(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) else None

    return {
        "app_id": text_claim("client_id"), "token_key_id": text_claim("key_id"), "family": text_claim("family"),
        "jti": text_claim("jti"),
    }


# A redemption's refresh tokens (its family's): their hash, the access token issued beside the
# newest, and whether they were rotated or revoked.
_FAMILY_REFRESH = Prepared(
    select(
        refresh_tokens.c.token_hash, refresh_tokens.c.access_jti, refresh_tokens.c.rotated_at, refresh_tokens.c.revoked_at
    ).where(refresh_tokens.c.code_hash == bindparam("code_hash"))
)
_DENIED = Prepared(
    select(
        select(revoked_families.c.code_hash).where(revoked_families.c.code_hash == bindparam("family")).exists().label("family"),
        select(revoked_access_tokens.c.jti).where(revoked_access_tokens.c.jti == bindparam("jti")).exists().label("jti"),
    )
)


async def refresh_of_family(conn: AsyncConnection, code_hash: str) -> Sequence[Row]:
    """The refresh tokens of one authorization code's family (``token_hash``, ``access_jti``,
    ``rotated_at``, ``revoked_at``)."""
    return await fetch_all(conn, _FAMILY_REFRESH, code_hash=code_hash)


async def denied(conn: AsyncConnection, family: str | None, jti: str) -> bool:
    """Whether an access token of ``family`` with ``jti`` is on either deny-list."""
    row = await fetch_one(conn, _DENIED, family=family, jti=jti)
    return bool(row.family) or bool(row.jti)  # type: ignore[union-attr]


async def revoke_access_token(conn: AsyncConnection, jti: str, expires_at: int) -> None:
    """Put one access token on the deny-list (``revoked_access_tokens``) until its exp. The caller
    has checked that it is the revoking app's."""
    stmt = upsert(conn, revoked_access_tokens).values(jti=jti, expires_at=expires_at)
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=[revoked_access_tokens.c.jti]))


async def access_token_state(conn: AsyncConnection, claims: dict[str, Any]) -> Row | None:
    """What can end the access token with ``claims`` (``_ACCESS_STATE``), read without a caller's
    key (a resource of grantd's own, ``GET /auth/user/info``, judges it); None: no such app."""
    return await fetch_one(conn, _ACCESS_STATE, **_state_params(claims))


# What the rules of rotation (grantd.core.grants.refresh_token) look at, in the same columns for both reads: the
# UPDATE that rotates a token on SQLite, and the plain read before it is rotated on PostgreSQL.
_CHECKED = (
    refresh_tokens.c.app_id,
    refresh_tokens.c.code_hash,
    refresh_tokens.c.user_id,
    refresh_tokens.c.scope,
    refresh_tokens.c.expires_at,
    refresh_tokens.c.revoked_at,
    refresh_tokens.c.auth_time,
    refresh_tokens.c.session_jti,
    refresh_tokens.c.dpop_jkt,
    refresh_tokens.c.resources,
    refresh_tokens.c.amr,
)
# A refresh token whose key (the one that authenticated its issue) was revoked since is not
# rotated: the key's revocation ended it (one lookup by primary key, in the same statement).
_KEY_NOT_REVOKED = ~(
    select(app_keys.c.id)
    .where(app_keys.c.id == refresh_tokens.c.key_id, app_keys.c.revoked_at.isnot(None))
    .exists()
)
_ROTATE = Prepared(
    update(refresh_tokens)
    .where(
        refresh_tokens.c.token_hash == bindparam("token_hash"),
        refresh_tokens.c.app_id == bindparam("app_id"),
        refresh_tokens.c.rotated_at.is_(None),
        refresh_tokens.c.revoked_at.is_(None),
        refresh_tokens.c.expires_at > bindparam("now"),
        _KEY_NOT_REVOKED,
    )
    .values(rotated_at=bindparam("now"))
    .returning(*_CHECKED)
)
_FIND_REFRESH = Prepared(
    select(*_CHECKED, refresh_tokens.c.rotated_at).where(refresh_tokens.c.token_hash == bindparam("token_hash"))
)
_REFRESH_STATE = Prepared(
    select(refresh_tokens, apps.c.disabled_at.label("app_disabled_at"), app_keys.c.revoked_at.label("key_revoked_at"))
    .join(apps, apps.c.id == refresh_tokens.c.app_id)
    .outerjoin(app_keys, app_keys.c.id == refresh_tokens.c.key_id)
    .where(refresh_tokens.c.token_hash == bindparam("token_hash"))
)


async def refresh_token_state(conn: AsyncConnection, token_hash: str) -> Row | None:
    return await fetch_one(conn, _REFRESH_STATE, token_hash=token_hash)


# The live key and the refresh token in one SELECT: a rotation's first read on PostgreSQL (``read_for``).
_LIVE_KEY_AND_REFRESH = LiveKeyAnd(_FIND_REFRESH.statement)


_LIVE_KEY_AND_ACCESS_STATE = LiveKeyAnd(_ACCESS_STATE.statement)
_LIVE_KEY_AND_REFRESH_STATE = LiveKeyAnd(_REFRESH_STATE.statement)


async def live_key_and_access_token_state(conn: AsyncConnection, key_id: str, claims: dict[str, Any]) -> tuple[Any, Any]:
    """What ``store.apps.live_key`` and ``access_token_state`` read, in one SELECT (one round trip).
    Neither is judged here: the caller verifies the key's secret before it looks at the token."""
    return await _LIVE_KEY_AND_ACCESS_STATE.fetch(conn, key_id, **_state_params(claims))


async def live_key_and_refresh_token_state(conn: AsyncConnection, key_id: str, token_hash: str) -> tuple[Any, Any]:
    """What ``store.apps.live_key`` and ``refresh_token_state`` read, in one SELECT (one round trip).
    Neither is judged here: the caller verifies the key's secret before it looks at the token."""
    return await _LIVE_KEY_AND_REFRESH_STATE.fetch(conn, key_id, token_hash=token_hash)


def _rotate_and_issue() -> Prepared:
    # Uncorrelated, the EXISTS is a one-time filter evaluated before the UPDATE scans: the family's
    # lock is held before the token's row is, the order every other writer of a family takes them in.
    lock = select(func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger)).label("locked")).cte("lock")
    spent = (
        update(refresh_tokens)
        .where(
            refresh_tokens.c.token_hash == bindparam("token_hash", type_=refresh_tokens.c.token_hash.type),
            refresh_tokens.c.app_id == bindparam("app_id", type_=refresh_tokens.c.app_id.type),
            refresh_tokens.c.rotated_at.is_(None),
            refresh_tokens.c.revoked_at.is_(None),
            refresh_tokens.c.expires_at > bindparam("now", type_=BigInteger),
            _KEY_NOT_REVOKED,
            select(lock.c.locked).exists(),
        )
        .values(rotated_at=bindparam("now", type_=BigInteger))
        .returning(refresh_tokens.c.code_hash)
        .cte("spent")
    )
    statement = insert_from(refresh_tokens, REFRESH_COLUMNS, "refresh_", spent)
    return Prepared(statement.returning(refresh_tokens.c.token_hash))


# Built once: it runs on every refresh-token rotation on PostgreSQL.
_ROTATE_AND_ISSUE = _rotate_and_issue()


async def rotate_and_issue(
    conn: AsyncConnection,
    token_hash: str,
    app_id: str,
    now: int,
    code_hash: str,
    *,
    refresh: dict[str, Any],
) -> bool:
    """PostgreSQL, in autocommit: rotate the refresh token if it is still the app's, live and
    unrotated, and in the same statement (one round trip, one transaction) insert the successor:
    both or neither. Whether this call rotated the token. (The new access token has no row.)

    The statement first takes the family's transaction-scoped advisory lock (``code_hash``'s, as
    ``lock_refresh_family`` and ``revoke_family`` do), then the token's row: of concurrent callers
    one rotates, the others wait, see it rotated and write nothing. The caller has read the token
    (``read_for``) and checked it in Python first; ``refresh`` is the successor's columns as the
    caller made them."""
    params: dict[str, Any] = {
        "token_hash": token_hash, "app_id": app_id, "now": now, "lock_key": family_lock_key(code_hash)
    }
    for name, value in refresh.items():
        params["refresh_" + name] = value
    return await fetch_one(conn, _ROTATE_AND_ISSUE, **params) is not None


async def rotate(db: Database, token_hash: str, now: int, spender: Rotator) -> tuple[bool, Row | None]:
    """Rotate a refresh token with what it issues (``spender.issue``: the new access token, which
    has no row, and the successor, written with the rotation; a rotation writes no audit row),
    exactly once on either database. For an app that does not rotate (``spender.rotates`` false
    once the caller is proven; ``issue`` then gives no successor) the token is kept, live, and only
    its ``access_jti`` is updated, if the token is still live and unrotated (``keep_and_issue``);
    it returns as a rotation does.
    Whether this call rotated it, and the token's row: when it was not rotated, the row only if it
    was rotated before or by a concurrent caller (a reuse for the caller to judge), else None.

    - SQLite: the caller proves itself, then one write transaction rotates the token (conditional
      ``UPDATE … RETURNING``: at most one caller wins), checks it (``spender.issue`` raising rolls
      the rotation back) and inserts the successor. When nothing was rotated, the token is read in
      the same transaction.
    - PostgreSQL: in autocommit, the key (``spender.key_id``) and the token are read by one SELECT
      and the key judged; the token is checked in Python, then one statement takes the family's
      lock, rotates the token and inserts the successor (``rotate_and_issue``): one round trip, one
      transaction. A statement that rotated nothing lost the token to a concurrent caller.
    """
    if db.is_sqlite:
        app_id = await spender.authenticate()
        if not spender.rotates:
            return await _keep_sqlite(db, token_hash, spender)
        async with db.write() as tx:
            row = await fetch_one(tx, _ROTATE, token_hash=token_hash, app_id=app_id, now=now)
            if row is None:
                known = await fetch_one(tx, _FIND_REFRESH, token_hash=token_hash)
                return False, known if known is not None and known.rotated_at is not None else None
            issue = spender.issue(row)  # raises inside the transaction: the token is not rotated
            await run(tx, INSERT_REFRESH, **issue.refresh)  # type: ignore[arg-type]
        return True, row
    key_id = spender.key_id
    app_id = None if key_id is not None else await spender.authenticate()
    async with db.autocommit() as conn:
        app_id, row = await read_for(conn, key_id, spender, app_id, _LIVE_KEY_AND_REFRESH, _FIND_REFRESH, token_hash=token_hash)
        if row is None:
            return False, None
        if row.rotated_at is not None:
            return False, row
        issue = spender.issue(row)  # raises before anything is written
        if issue.refresh is None:  # the app keeps its refresh tokens: only the access token is new
            return await keep_and_issue(conn, token_hash, app_id, now, issue.access["jti"]), row
        rotated = await rotate_and_issue(conn, token_hash, app_id, now, row.code_hash, refresh=issue.refresh)
    return rotated, row  # rotated, or lost to a concurrent caller: a reuse to judge


# A refresh of an app that does not rotate, on PostgreSQL in autocommit: one statement that
# re-checks the token under its row lock (its key not revoked since; an UPDATE: a concurrent
# revocation of its family, which locks the row too, either comes first and leaves nothing to
# keep, or waits and then denies the family the new access token belongs to). The token's
# ``access_jti`` becomes the newest access token issued beside it.
def _keep_and_issue() -> Prepared:
    return Prepared(
        update(refresh_tokens)
        .where(
            refresh_tokens.c.token_hash == bindparam("token_hash", type_=refresh_tokens.c.token_hash.type),
            refresh_tokens.c.app_id == bindparam("app_id", type_=refresh_tokens.c.app_id.type),
            refresh_tokens.c.rotated_at.is_(None),
            refresh_tokens.c.revoked_at.is_(None),
            refresh_tokens.c.expires_at > bindparam("now", type_=BigInteger),
            _KEY_NOT_REVOKED,
        )
        .values(access_jti=bindparam("access_jti", type_=refresh_tokens.c.access_jti.type))
        .returning(refresh_tokens.c.code_hash)
    )


_KEEP_AND_ISSUE = _keep_and_issue()
# The token as a refresh that keeps it reads it on SQLite: none when the key that authenticated its
# issue was revoked since (``_KEY_NOT_REVOKED``: the key's revocation ended it).
_FIND_KEPT = Prepared(
    select(*_CHECKED, refresh_tokens.c.rotated_at).where(
        refresh_tokens.c.token_hash == bindparam("token_hash"), _KEY_NOT_REVOKED
    )
)
_KEEP = Prepared(
    update(refresh_tokens)
    .where(refresh_tokens.c.token_hash == bindparam("token_hash"))
    .values(access_jti=bindparam("access_jti"))
)


async def keep_and_issue(conn: AsyncConnection, token_hash: str, app_id: str, now: int, access_jti: str) -> bool:
    """PostgreSQL, in autocommit: record ``access_jti`` beside the refresh token if it is still the
    app's, live and unrotated (``_keep_and_issue``); whether it was."""
    params = {"token_hash": token_hash, "app_id": app_id, "now": now, "access_jti": access_jti}
    return await fetch_one(conn, _KEEP_AND_ISSUE, **params) is not None


async def _keep_sqlite(db: Database, token_hash: str, spender: Rotator) -> tuple[bool, Row | None]:
    """SQLite: a refresh of an app that does not rotate, in one write transaction (SQLite's writers
    queue, so what is read is what is judged): the token read and judged (``spender.issue``), the
    new access token's jti recorded beside it, the token kept. A token rotated before (the app rotated then) is a reuse."""
    async with db.write() as tx:
        row = await fetch_one(tx, _FIND_KEPT, token_hash=token_hash)
        if row is None or row.rotated_at is not None:
            return False, row
        issue = spender.issue(row)  # raises inside the transaction: nothing is written
        await run(tx, _KEEP, token_hash=token_hash, access_jti=issue.access["jti"])
    return True, row


async def read_for(
    conn: AsyncConnection, key_id: str | None, spender: Spender, app_id: str | None, with_key: LiveKeyAnd,
    alone: Prepared, **params: Any
) -> tuple[str, Row | None]:
    """PostgreSQL's first step of a spend: the row to spend (``alone``'s read), and the caller's app
    id. A caller not yet proven (``app_id`` None) has its key (``key_id``) read with the row in one
    SELECT (``with_key``) and judged (``spender.proven``) before the row is looked at."""
    if app_id is None:
        key, row = await with_key.fetch(conn, key_id, **params)  # type: ignore[arg-type]
        return spender.proven(key), row
    return app_id, await fetch_one(conn, alone, **params)
