"""The test databases' plumbing: PostgreSQL's admin connection (and whether it answers), creating and
dropping databases through it, migrating a database to the current schema, and reading what a real
server process wrote there.

The database fixtures (``postgres_url``, ``sqlite_url``, ``database_url``, ``any_database_url``) are
in tests/conftest.py. PostgreSQL is expected at GRANTD_TEST_PG_DSN, by default 127.0.0.1:5432 (user
postgres, trust auth, database test).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


from grantd.store.db import Database
from grantd.store.migrate import upgrade

PG_ADMIN_DSN = os.environ.get("GRANTD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_admin() -> Any:
    """An asyncpg connection to the admin database: the caller closes it."""
    import asyncpg

    return await asyncpg.connect(PG_ADMIN_DSN, timeout=3)


async def pg_execute(sql: str) -> None:
    """One statement on a connection of its own to the admin database (CREATE or DROP DATABASE)."""
    conn = await pg_admin()
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_available() -> str | None:
    """None when PostgreSQL answers; the reason it does not otherwise."""

    async def probe() -> None:
        conn = await pg_admin()
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # noqa: BLE001 - any failure means: not available here
        return f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc.__class__.__name__}: {exc}"
    return None


async def migrate(url: str) -> None:
    """The database at ``url`` upgraded to the current schema."""
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()
