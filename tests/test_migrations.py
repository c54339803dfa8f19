"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

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
