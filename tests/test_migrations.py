"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from grantd.store.db import Database
from grantd.store.migrate import HEAD, alembic_head, is_current, upgrade
from grantd.store.schema import metadata

pytestmark = pytest.mark.db


async def test_migrated_schema_matches_the_declared_tables(any_database_url: str) -> None:
    db = Database(any_database_url)
    try:
        assert await is_current(db)
        async with db.read() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        assert diff == []
        await upgrade(db)  # a second run changes nothing and does not fail
        assert await is_current(db)
    finally:
        await db.dispose()


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


# The lookups of access tokens by family and by user, as the store makes them (store.tokens'
# revoke_family and revoke_user_app, store.grants.of_user's last use): written here as SQL.
_TOKEN_LOOKUPS = {
    "ix_access_tokens_code_hash": "SELECT jti FROM access_tokens WHERE code_hash = :h AND revoked_at IS NULL",
    "ix_access_tokens_user_app": "SELECT jti FROM access_tokens WHERE user_id = :u AND app_id = :a AND revoked_at IS NULL",
}
_LAST_USED = (
    "SELECT (SELECT max(access_tokens.issued_at) FROM access_tokens WHERE access_tokens.user_id = grants.user_id "
    "AND access_tokens.app_id = grants.app_id) FROM grants WHERE grants.user_id = :u"
)


async def test_token_lookups_use_the_partial_indexes(any_database_url: str) -> None:
    """The code_hash and (user_id, app_id) indexes leave out client_credentials tokens (migration
    0005); revoking a family or a user's grant, and a grant's last use, still find their tokens
    through them rather than by reading the whole table."""
    db = Database(any_database_url)
    params = {"h": "0" * 64, "u": "u" * 36, "a": "a" * 36}

    def plan(sync, sql: str) -> str:  # type: ignore[no-untyped-def]
        if sync.dialect.name == "sqlite":
            rows = sync.execute(text(f"EXPLAIN QUERY PLAN {sql}"), params).all()
            return "\n".join(str(row[-1]) for row in rows)
        sync.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table would be read whole anyway
        return "\n".join(row[0] for row in sync.execute(text(f"EXPLAIN {sql}"), params).all())

    try:
        async with db.read() as conn:
            for index, sql in _TOKEN_LOOKUPS.items():
                assert index in await conn.run_sync(plan, sql), sql
            assert "ix_access_tokens_user_app" in await conn.run_sync(plan, _LAST_USED)
    finally:
        await db.dispose()
