"""The database handle (``Database``): a read path and a write path, over SQLite or PostgreSQL,
and the query helpers the store's modules build their statements with.

Writes run in a transaction; reads run in autocommit. Correctness under concurrency comes
from the statements themselves (conditional ``UPDATE … RETURNING``, unique constraints), so
any number of processes may share one database.

``Database`` chooses the engine that serves a block: on an SQLite file ``store.sqlite`` (two
connections on the event loop, group commit), on PostgreSQL ``store.postgres`` (asyncpg
connections in grantd's pool). Hot statements (``Prepared``, ``store.prepared``) run on either
through ``fetch_one``, ``fetch_all`` and ``run``; everything else runs through SQLAlchemy Core,
on the same connections. SQLAlchemy's async engine stays for Alembic
(``engine_write``/``engine_read``), for tests that use it directly, and for an in-memory SQLite
database.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, func, insert, literal_column, select
from sqlalchemy.dialects import sqlite as sqlite_dialects
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from grantd.store.availability import Availability
from grantd.store.postgres import PgConnection, Postgres
from grantd.store.prepared import Prepared
from grantd.store.sqlite import LoopConnection, LoopSQLite, configure_engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Database", "fetch_all", "fetch_one", "insert_from", "later_of", "run", "upsert"]


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10, timeout: float = 5.0) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # Whether it answers now; a block that finds it does not raises DatabaseUnavailable.
        self.availability = Availability("sqlite" if self.is_sqlite else "postgresql")
        self._loop_sqlite: LoopSQLite | None = None
        self._pg: Postgres | None = None
        # The SQLite file, when it is one (the readiness check looks at its file system's free space).
        self.sqlite_path: str | None = None
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                self.sqlite_path = parsed.database
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self._loop_sqlite = LoopSQLite(parsed.database, self.availability)
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._engine_autocommit: AsyncEngine | None = None
        if not self.is_sqlite:
            # Requests are served from asyncpg connections in grantd's pool (store.postgres). The
            # engine serves Alembic at start and tests: without a pool of its own, each use opens a
            # fresh connection, so none of them can meet one that a database restart left dead (no
            # pre-ping needed). The engine itself (and the asyncio extension and ORM it imports) is
            # made only if used.
            self._pg = Postgres(parsed, pool_size, pool_size + max_overflow, self.engine_read, self.availability, timeout)

    @property
    def engine(self) -> AsyncEngine:
        """SQLAlchemy's async engine, made on first use. Requests never use it (Alembic and tests
        do): SQLAlchemy's asyncio extension, and the ORM it imports, cost each server process
        ~7 MB that it then does not carry."""
        if self._engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            if self.is_sqlite:
                self._engine = create_async_engine(
                    self.url, pool_size=self._pool_size, max_overflow=10, hide_parameters=True
                )
                configure_engine(self._engine)
            else:
                self._engine = create_async_engine(self.url, poolclass=NullPool, hide_parameters=True)
        return self._engine

    @property
    def _autocommit(self) -> AsyncEngine:
        if self._engine_autocommit is None:
            self._engine_autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        return self._engine_autocommit

    def write(self) -> AbstractAsyncContextManager[Any]:
        """A transaction: committed when the block ends (on SQLite, with the other blocks of this turn)."""
        if self._loop_sqlite is not None:
            return self._loop_sqlite.write()
        if self._pg is not None:
            return self._pg.write()
        return self.engine.begin()

    def write_one(self) -> AbstractAsyncContextManager[Any]:
        """A write block of exactly one statement (a second one raises). On PostgreSQL it runs in
        autocommit: one statement is a transaction of its own, all or nothing and committed when it
        returns, so BEGIN and COMMIT would be two round trips that change nothing. On SQLite it is
        ``write()``.

        Only for a statement that is harmless to run twice: when it finds its pooled connection
        dead, it runs again on a fresh one, and a connection can die after the statement committed
        but before its answer arrived. The INSERT of a new primary key qualifies: run again, it
        fails with a unique violation rather than write a second row."""
        if self._pg is not None:
            return self._pg.write_one()
        return self.write()

    def autocommit(self) -> AbstractAsyncContextManager[Any]:
        """PostgreSQL only: one pooled connection in autocommit, for a read followed by a write that
        is one statement (each statement is a transaction of its own, committed when it returns).

        The hot grants read what they are about to change, check it in Python, then change it
        with one statement whose conditions make it atomic (``store.codes.spend_and_issue``): two
        round trips on one check-out, instead of a transaction's ``BEGIN``, statements and
        ``COMMIT``. As with ``read()``, a first statement that finds the connection dead (killed
        while pooled) runs again on a fresh one; the write that follows is never run twice."""
        if self._pg is None:
            raise RuntimeError("autocommit() is for PostgreSQL; on SQLite use write()")
        return self._pg.autocommit()

    def read(self) -> AbstractAsyncContextManager[Any]:
        """Autocommit reads of committed data."""
        if self._loop_sqlite is not None:
            return self._loop_sqlite.read()
        if self._pg is not None:
            return self._pg.read()
        return self._autocommit.connect()

    def pool_status(self) -> tuple[int, int, int, int] | None:
        """(size, checked out, idle, overflow) of the pool requests are served from; None when unknown."""
        if self._pg is not None:
            return self._pg.status()
        if self._loop_sqlite is not None:
            return self._loop_sqlite.status()
        pool = self.engine.pool
        try:
            return (pool.size(), pool.checkedout(), pool.checkedin(), max(0, pool.overflow()))  # type: ignore[attr-defined]
        except AttributeError:  # a pool kind without these counters
            return None

    def engine_write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction on the SQLAlchemy engine itself (Alembic needs its connection)."""
        return self.engine.begin()

    def engine_read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._autocommit.connect()

    async def dispose(self) -> None:
        if self._loop_sqlite is not None:
            await self._loop_sqlite.close()
        if self._pg is not None:
            await self._pg.close()
        if self._engine is not None:
            await self._engine.dispose()


async def fetch_one(conn: Any, prepared: Prepared, **params: Any) -> Any:
    if isinstance(conn, LoopConnection):
        return conn.raw_one(prepared, params)
    if isinstance(conn, PgConnection):
        return await conn.raw_one(prepared, params)
    return (await prepared.execute(conn, params)).first()


async def fetch_all(conn: Any, prepared: Prepared, **params: Any) -> Sequence[Any]:
    if isinstance(conn, LoopConnection):
        return conn.raw_all(prepared, params)
    if isinstance(conn, PgConnection):
        return await conn.raw_all(prepared, params)
    return (await prepared.execute(conn, params)).all()  # type: ignore[no-any-return]


async def run(conn: Any, prepared: Prepared, **params: Any) -> int:
    """Execute; the number of rows it changed."""
    if isinstance(conn, LoopConnection):
        return conn.raw_run(prepared, params)
    if isinstance(conn, PgConnection):
        return await conn.raw_run(prepared, params)
    return (await prepared.execute(conn, params)).rowcount  # type: ignore[no-any-return]


def upsert(conn: Any, table: Any) -> Any:
    """The dialect's ``INSERT`` of ``table``, which has ``on_conflict_do_update`` (both databases
    speak ``INSERT … ON CONFLICT``)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect  # its import loads every PostgreSQL driver module
    else:
        dialect = sqlite_dialects  # type: ignore[assignment]
    return dialect.insert(table)


def later_of(first: Any, second: Any) -> Any:
    """The later of two nullable times, NULL only when both are: the same on both databases
    (SQLite's two-argument ``max`` is NULL when either is, PostgreSQL's ``greatest`` ignores NULLs)."""
    zero = literal_column("0")
    return case((func.coalesce(first, zero) >= func.coalesce(second, zero), first), else_=second)


def insert_from(table: Any, columns: Sequence[str], prefix: str, source: Any) -> Any:
    """``INSERT INTO table (columns) SELECT :<prefix><column>, … FROM source``: one row of the
    bound values for each row of ``source`` (a CTE), so none when ``source`` is empty. The
    parameters carry their columns' types (PostgreSQL cannot infer the type of a selected one)."""
    values = [bindparam(prefix + name, type_=table.c[name].type) for name in columns]
    return insert(table).from_select(list(columns), select(*values).select_from(source))

