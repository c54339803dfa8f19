"""Bring a database to the newest schema with Alembic; used by `grantd migrate` and `grantd serve`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

from grantd.store.db import Database

# Alembic is imported where it is used: a serving process needs it only to migrate at start
# and to answer /readyz, and it costs ~10 MB of memory in every worker that imports it.
if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent `grantd migrate` runs against one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x6772616E74


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection, config: Config) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    from alembic import command

    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(db: Database) -> None:
    config = alembic_config()
    async with db.engine_write() as conn:
        await conn.run_sync(_upgrade, config)


def _is_current(connection: Connection) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return MigrationContext.configure(connection).get_current_revision() == head


async def is_current(db: Database) -> bool:
    async with db.engine_read() as conn:
        return await conn.run_sync(_is_current)
