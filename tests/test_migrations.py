"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from grantd.store.db import Database
from grantd.store.migrate import HEAD, alembic_head, is_current, upgrade
from grantd.store.schema import ddl_metadata

pytestmark = pytest.mark.db


async def test_migrated_schema_matches_the_declared_tables(any_database_url: str) -> None:
    db = Database(any_database_url)
    try:
        assert await is_current(db)
        async with db.read() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), ddl_metadata()))
        assert diff == []
        await upgrade(db)  # a second run changes nothing and does not fail
        assert await is_current(db)
    finally:
        await db.dispose()


async def test_migrated_partial_indexes_are_the_declared_ones(any_database_url: str) -> None:
    """Each index has the WHERE the code declares for the database, none where it declares none:
    compare_metadata compares an index's columns, not its WHERE."""
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex

    db = Database(any_database_url)
    dialect = sqlite.dialect() if db.is_sqlite else postgresql.dialect()
    declared = {}
    for table in ddl_metadata().tables.values():
        for index in table.indexes:
            ddl = str(CreateIndex(index).compile(dialect=dialect))
            if " WHERE " in ddl:
                declared[index.name] = ddl.split(" WHERE ", 1)[1]
    if db.is_sqlite:
        found = "SELECT name, substr(sql, instr(sql, ' WHERE ') + 7) FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'"
    else:
        found = (
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND i.indpred IS NOT NULL"
        )
    try:
        async with db.read() as conn:
            migrated = {name: where for name, where in (await conn.execute(text(found))).all()}
    finally:
        await db.dispose()

    def plain(where: str) -> str:  # PostgreSQL gives its predicate back in parentheses
        return " ".join(where.replace("(", " ").replace(")", " ").split())

    assert {name: plain(where) for name, where in migrated.items()} == {name: plain(where) for name, where in declared.items()}
    assert plain(declared["ix_refresh_tokens_session_jti"]) == "session_jti IS NOT NULL"


def test_readiness_knows_the_newest_migration() -> None:
    """/readyz compares the database with ``HEAD`` without Alembic: a new migration must move it."""
    assert HEAD == alembic_head()


async def test_a_database_never_migrated_is_not_current(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        assert not await is_current(db)
        await upgrade(db)
        assert await is_current(db)
    finally:
        await db.dispose()


# What introspection reads for an access token (store.tokens._ACCESS_STATE), written here as SQL:
# its app, its key and the two deny-lists, each by primary key.
_ACCESS_STATE = (
    "SELECT apps.disabled_at, apps.tokens_revoked_at, app_keys.revoked_at, revoked_families.code_hash, "
    "revoked_access_tokens.jti FROM apps "
    "LEFT OUTER JOIN app_keys ON app_keys.id = :k AND app_keys.app_id = apps.id "
    "LEFT OUTER JOIN revoked_families ON revoked_families.code_hash = :h "
    "LEFT OUTER JOIN revoked_access_tokens ON revoked_access_tokens.jti = :j "
    "WHERE apps.id = :a"
)


async def test_an_access_tokens_state_is_read_by_primary_keys(any_database_url: str) -> None:
    """Introspection's one SELECT reads no table whole, however many rows the deny-lists hold."""
    db = Database(any_database_url)
    params = {"h": "0" * 64, "k": "k" * 32, "j": "j" * 36, "a": "a" * 36}

    def plan(sync) -> str:  # type: ignore[no-untyped-def]
        if sync.dialect.name == "sqlite":
            rows = sync.execute(text(f"EXPLAIN QUERY PLAN {_ACCESS_STATE}"), params).all()
            return "\n".join(str(row[-1]) for row in rows)
        sync.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table would be read whole anyway
        return "\n".join(row[0] for row in sync.execute(text(f"EXPLAIN {_ACCESS_STATE}"), params).all())

    try:
        async with db.read() as conn:
            found = await conn.run_sync(plan)
    finally:
        await db.dispose()
    assert "SCAN" not in found and "Seq Scan" not in found, found


async def test_migration_0026_keeps_what_the_access_token_rows_knew(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Upgrading drops access_tokens, after moving its revoked, unexpired tokens' jti to the
    deny-list and its newest issue times to the keys' and grants' last use; a downgrade brings
    the table back (empty)."""
    from alembic import command

    from grantd.store.migrate import alembic_config

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'before.db'}")
    config = alembic_config()
    future = 2**40

    def to(revision: str, sync) -> None:  # type: ignore[no-untyped-def]
        config.attributes["connection"] = sync
        command.upgrade(config, revision)

    try:
        async with db.engine_write() as conn:
            await conn.run_sync(lambda sync: to("0025", sync))
            for sql in (
                "INSERT INTO users (id, email, password_hash, created_at) VALUES ('u1', 'u1@example.com', '!', 0)",
                "INSERT INTO apps (id, owner_id, name, redirect_uris, permissions, app_key_hash, created_at, updated_at) "
                "VALUES ('a1', 'u1', 'App', '[]', 'read_profile', 'x', 0, 0)",
                "INSERT INTO app_keys (id, app_id, secret_hash, created_at) VALUES ('k1', 'a1', 'x', 0)",
                "INSERT INTO grants (id, user_id, app_id, permissions, created_at, updated_at) VALUES ('g1', 'u1', 'a1', 'read_profile', 0, 0)",
                "INSERT INTO access_tokens (jti, app_id, user_id, key_id, scope, issued_at, expires_at, revoked_at) VALUES "
                f"('revoked-live', 'a1', 'u1', 'k1', '', 100, {future}, 150), ('revoked-expired', 'a1', 'u1', 'k1', '', 90, 1, 95), "
                f"('live', 'a1', NULL, 'k1', '', 200, {future}, NULL)",
            ):
                await conn.execute(text(sql))
        await upgrade(db)
        assert await is_current(db)
        async with db.read() as conn:
            denied = (await conn.execute(text("SELECT jti, expires_at FROM revoked_access_tokens"))).all()
            key_used = (await conn.execute(text("SELECT last_used_at FROM app_keys WHERE id = 'k1'"))).scalar_one()
            grant_used = (await conn.execute(text("SELECT last_used_at FROM grants WHERE id = 'g1'"))).scalar_one()
            tables = (await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))).scalars().all()
        assert [tuple(row) for row in denied] == [("revoked-live", future)]
        assert (key_used, grant_used) == (200, 100)
        assert "access_tokens" not in tables
        async with db.engine_write() as conn:
            await conn.run_sync(lambda sync: (config.attributes.__setitem__("connection", sync), command.downgrade(config, "0025")))
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM access_tokens"))).scalar_one() == 0
        await upgrade(db)
        assert await is_current(db)
    finally:
        await db.dispose()
