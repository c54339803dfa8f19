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
# The newest migration's revision. A new migration changes it; tests/test_migrations.py checks
# that it is Alembic's head.
HEAD = "0026"
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


def alembic_head() -> str | None:
    """The newest migration, as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def is_current(db: Database) -> bool:
    """Whether the database is at ``HEAD``: one read on the request path's own connections, so
    that /readyz, probed every few seconds, loads neither Alembic nor a second engine."""
    async with db.read() as conn:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except Exception:  # noqa: BLE001 - no such table: never migrated (an unreachable database fails below too)
            await conn.execute(text("SELECT 1"))
            return False
    return row is not None and row[0] == HEAD
