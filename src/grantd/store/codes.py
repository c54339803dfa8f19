from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, bindparam, cast, insert, select, update
from sqlalchemy.engine import Row

from grantd.store import audit as audit_store
from grantd.store.apps import LiveKeyAnd
from grantd.store.db import fetch_one, insert_from, run
from grantd.store.prepared import Prepared
from grantd.store import tokens as token_store
from grantd.store.tokens import REFRESH_COLUMNS, Spender
from grantd.store.schema import audit_events, grants, refresh_tokens
from grantd.store.schema import authorization_codes as codes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from grantd.store.db import Database


_CODE = (
    "code_hash", "app_id", "user_id", "redirect_uri", "permissions", "state", "code_challenge", "created_at", "expires_at",
    "nonce", "auth_time", "session_jti", "dpop_jkt", "resources", "redirect_uri_included",
    "amr",
)
_AUDIT = ("occurred_at", "event", "actor", "user_id", "app_id", "address", "detail")
# The user's grant to the app, for a code written only while it exists.
_GRANTED = (
    select(grants.c.id)
    .where(
        grants.c.user_id == bindparam("user_id", type_=grants.c.user_id.type),
        grants.c.app_id == bindparam("app_id", type_=grants.c.app_id.type),
    )
    .exists()
)


def _param(name: str) -> Any:
    """The code column's value as a typed parameter (a boolean as a CAST: its bind type would need
    a conversion, which a Prepared statement's parameters may not)."""
    column_type = codes.c[name].type
    if isinstance(column_type, Boolean):
        return cast(bindparam(name), column_type)
    return bindparam(name, type_=column_type)


def _code_statements(while_granted: bool) -> tuple[Prepared, Prepared]:
    """The code's INSERT, and (PostgreSQL) the code's and its audit row's in one statement: the
    audit row is selected from the code's ``INSERT … RETURNING``, so it is written with the code or
    not at all."""
    values = select(*(_param(name) for name in _CODE))
    code = insert(codes).from_select(list(_CODE), values.where(_GRANTED) if while_granted else values)
    with_audit = insert_from(audit_events, _AUDIT, "audit_", code.returning(codes.c.code_hash).cte("issued"))
    return Prepared(code), Prepared(with_audit.returning(audit_events.c.id))


_INSERT = {True: _code_statements(True), False: _code_statements(False)}


async def insert_code(
    conn: AsyncConnection, code: dict[str, Any], audit: dict[str, Any], *, while_granted: bool = False
) -> bool:
    """A new code (``code``: the values of its columns) and its ``code_issued`` audit row
    (``audit.entry``'s); with ``while_granted``, only if the user's grant to the app still exists.
    Whether they were written.

    On PostgreSQL one statement, so that in autocommit (``Database.write_one``) it is one round
    trip and one transaction; on SQLite the two INSERTs of the caller's write block."""
    alone, with_audit = _INSERT[while_granted]
    if conn.dialect.name == "postgresql":
        params = {**code, **{"audit_" + name: value for name, value in audit.items()}}
        return await fetch_one(conn, with_audit, **params) is not None
    if await run(conn, alone, **code) != 1:
        return False
    await audit_store.insert_event(conn, **audit)
    return True


# What the rules of redemption (grantd.core.grants.authorization_code) look at, in the same columns for both reads:
# the UPDATE that spends a code on SQLite, and the plain read before it is spent on PostgreSQL.
_CHECKED = (
    codes.c.app_id,
    codes.c.user_id,
    codes.c.permissions,
    codes.c.redirect_uri,
    codes.c.state,
    codes.c.code_challenge,
    codes.c.expires_at,
    codes.c.nonce,
    codes.c.auth_time,
    codes.c.session_jti,
    codes.c.dpop_jkt,
    codes.c.resources,
    codes.c.redirect_uri_included,
    codes.c.amr,
)
_REDEEM = Prepared(
    update(codes)
    .where(
        codes.c.code_hash == bindparam("code_hash"),
        codes.c.app_id == bindparam("app_id"),
        codes.c.redeemed_at.is_(None),
        codes.c.expires_at > bindparam("now"),
    )
    .values(redeemed_at=bindparam("now"))
    .returning(*_CHECKED)
)
_FIND = Prepared(
    select(*_CHECKED, codes.c.redeemed_at, codes.c.access_jti, codes.c.key_id).where(codes.c.code_hash == bindparam("code_hash"))
)
# What the redemption issued, on SQLite once the spent code is judged (on PostgreSQL the spend
# itself writes it): the access token's jti and the key that redeemed it, for a retry.
_ISSUED = Prepared(
    update(codes)
    .where(codes.c.code_hash == bindparam("code_hash"))
    .values(access_jti=bindparam("access_jti"), key_id=bindparam("key_id"))
)


async def spend(db: Database, code_hash: str, now: int, spender: Spender) -> tuple[bool, Row | None]:
    """Redeem a code with what it issues (``spender.issue``: the access token, which has no row but
    whose jti and key are written on the code, a refresh token or None, and the code_redeemed audit
    row, which a redemption always writes), exactly once on either database. Whether this call spent it, and the code's row: when it was not spent, the row
    only if the code was spent before or by a concurrent caller (a replay for the caller to judge),
    else None.

    - SQLite: the caller proves itself, then one write transaction spends the code (conditional
      ``UPDATE … RETURNING``: at most one caller wins), checks it (``spender.issue`` raising rolls
      the spend back) and inserts the rows. When nothing was spent, the code is read in the same
      transaction.
    - PostgreSQL: in autocommit, the key (``spender.key_id``) and the code are read by one SELECT
      and the key judged; the code is checked in Python, then one statement spends it and writes
      the rows (``spend_and_issue``): one round trip, one transaction. A statement that spent
      nothing lost the code to a concurrent caller.
    """
    if db.is_sqlite:
        app_id = await spender.authenticate()
        async with db.write() as tx:
            code = await fetch_one(tx, _REDEEM, code_hash=code_hash, app_id=app_id, now=now)
            if code is None:
                known = await find(tx, code_hash)
                return False, known if known is not None and known.redeemed_at is not None else None
            issue = spender.issue(code)  # raises inside the transaction: the code is not spent
            await run(tx, _ISSUED, code_hash=code_hash, access_jti=issue.access["jti"], key_id=issue.access["key_id"])
            if issue.refresh is not None:
                await run(tx, token_store.INSERT_REFRESH, **issue.refresh)
            await audit_store.insert_event(tx, **issue.audit)  # type: ignore[arg-type]
        return True, code
    key_id = spender.key_id
    app_id = None if key_id is not None else await spender.authenticate()
    async with db.autocommit() as conn:
        app_id, code = await token_store.read_for(conn, key_id, spender, app_id, _LIVE_KEY_AND_CODE, _FIND, code_hash=code_hash)
        if code is None:
            return False, None
        if code.redeemed_at is not None:
            return False, code
        issue = spender.issue(code)  # raises before anything is written
        spent = await spend_and_issue(
            conn, code_hash, app_id, now, access=issue.access, refresh=issue.refresh, audit=issue.audit  # type: ignore[arg-type]
        )
    return spent, code  # spent, or lost to a concurrent caller: a replay to judge


async def find(conn: AsyncConnection, code_hash: str) -> Row | None:
    """The code as it is, spent or not (no lock)."""
    return await fetch_one(conn, _FIND, code_hash=code_hash)


# The live key (None when unknown, revoked or of a disabled app) and the code (None when unknown),
# in one SELECT: a spend's first read on PostgreSQL (``store.tokens.read_for``).
_LIVE_KEY_AND_CODE = LiveKeyAnd(_FIND.statement)


def _spend_and_issue(with_refresh: bool) -> Prepared:
    spent = (
        update(codes)
        .where(
            codes.c.code_hash == bindparam("code_hash", type_=codes.c.code_hash.type),
            codes.c.app_id == bindparam("app_id", type_=codes.c.app_id.type),
            codes.c.redeemed_at.is_(None),
            codes.c.expires_at > bindparam("now", type_=codes.c.expires_at.type),
        )
        .values(
            redeemed_at=bindparam("now", type_=codes.c.redeemed_at.type),
            access_jti=bindparam("access_jti", type_=codes.c.access_jti.type),
            key_id=bindparam("access_key_id", type_=codes.c.key_id.type),
        )
        .returning(codes.c.code_hash)
        .cte("spent")
    )
    issued = []
    if with_refresh:
        issued.append(insert_from(refresh_tokens, REFRESH_COLUMNS, "refresh_", spent).cte("refresh"))
    statement = insert_from(audit_events, _AUDIT, "audit_", spent)
    if issued:
        statement = statement.add_cte(*issued)
    statement = statement.returning(audit_events.c.id)
    return Prepared(statement)


# Built once each: they run on every code redemption on PostgreSQL.
_SPEND_AND_ISSUE = {False: _spend_and_issue(False), True: _spend_and_issue(True)}


async def spend_and_issue(
    conn: AsyncConnection,
    code_hash: str,
    app_id: str,
    now: int,
    *,
    access: dict[str, Any],
    refresh: dict[str, Any] | None,
    audit: dict[str, Any],
) -> bool:
    """PostgreSQL, in autocommit: spend the code if it is still the app's, unexpired and unused
    (recording the access token's jti and key on it), and in the same statement (one round trip,
    one transaction) insert the refresh token when given and the audit row: all of them or none.
    Whether this call spent the code.

    One statement ``WITH spent AS (UPDATE … RETURNING …) [, refresh AS (INSERT … SELECT … FROM
    spent)] INSERT INTO audit_events … SELECT … FROM spent``: each INSERT takes its row
    from ``spent``, so it writes nothing when the UPDATE spent nothing. The UPDATE's conditions make
    it atomic: of concurrent callers, one spends the code, the others wait for its row lock, see it
    redeemed and spend nothing. The caller has read the code (``find``) and checked it in Python
    first; ``access`` (the access token's particulars: its ``jti`` and ``key_id`` are read),
    ``refresh`` (columns of refresh_tokens) and ``audit`` (``audit.entry``) as the caller made them."""
    params: dict[str, Any] = {
        "code_hash": code_hash, "app_id": app_id, "now": now, "access_jti": access["jti"], "access_key_id": access["key_id"]
    }
    for prefix, row in (("refresh_", refresh), ("audit_", audit)):
        if row is not None:
            for name, value in row.items():
                params[prefix + name] = value
    return await fetch_one(conn, _SPEND_AND_ISSUE[refresh is not None], **params) is not None


async def void_unredeemed(conn: AsyncConnection, user_id: str, app_id: str, now: int) -> None:
    """Spend every outstanding code of a user for an app, so none of them can be redeemed."""
    await conn.execute(
        update(codes)
        .where(codes.c.user_id == user_id, codes.c.app_id == app_id, codes.c.redeemed_at.is_(None))
        .values(redeemed_at=now)
    )
