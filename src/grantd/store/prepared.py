"""Hot statements, compiled once per dialect (``Prepared``).

A store module builds each of its hot statements once, at import, with ``bindparam`` names, and
runs it with ``store.db``'s ``fetch_one``/``fetch_all``/``run``. Each engine runs it on its
driver's cursor (``store.sqlite``: the ``sqlite3`` cursor; ``store.postgres``: asyncpg's statement
cache), from SQL compiled here once for that driver; everything else runs through SQLAlchemy Core,
on the same connections.
"""

from __future__ import annotations

import operator
from collections import namedtuple
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import sqlite as sqlite_dialects
from sqlalchemy.sql import ClauseElement

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

_SQLITE_DIALECT = sqlite_dialects.dialect(paramstyle="qmark")
_PG_DIALECT: Any = None


def pg_dialect() -> Any:
    """SQLAlchemy's asyncpg dialect (``$n`` parameters), made on first use: an SQLite process never
    imports it."""
    global _PG_DIALECT
    if _PG_DIALECT is None:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        _PG_DIALECT = dialect()
    return _PG_DIALECT


class Prepared:
    """A hot statement, built once with ``bindparam`` names and compiled once for SQLite.

    ``await fetch_one(conn, STATEMENT, name=value, …)`` (and ``fetch_all``, ``run``) executes it
    on either kind of connection: on the loop SQLite connections straight on the ``sqlite3``
    cursor, elsewhere as driver SQL compiled once for that connection's dialect. Rows are read
    by column name either way.
    """

    __slots__ = ("statement", "sqlite_sql", "_sqlite_params", "returns_rows", "_row", "_compiled", "_pg")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self.sqlite_sql, names = _compile(statement, _SQLITE_DIALECT)
        self._sqlite_params = _values_of(names)
        self.returns_rows = bool(getattr(statement, "_returning", None)) or statement.is_select  # type: ignore[attr-defined]
        self._row: Any = None
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._pg: tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]] | None = None

    def sqlite_params(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return self._sqlite_params(params)  # type: ignore[no-any-return]

    def pg(self) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
        """The statement's asyncpg SQL (``$n``), compiled on first use, and its parameter picker."""
        if self._pg is None:
            compiled = self.statement.compile(dialect=pg_dialect())
            if compiled._bind_processors:  # asyncpg takes every type grantd uses as it is
                raise ValueError("a Prepared statement's parameters must need no conversion on PostgreSQL")
            self._pg = (compiled.string, _values_of(tuple(compiled.positiontup or ())))
        return self._pg

    async def execute(self, conn: AsyncConnection, params: dict[str, Any]) -> Any:
        """On an SQLAlchemy connection: the statement compiled once for its dialect, run as driver SQL."""
        compiled = self._compiled.get(conn.dialect.name)
        if compiled is None:
            compiled = self._compiled[conn.dialect.name] = _compile(self.statement, conn.dialect)
        sql, names = compiled
        return await conn.exec_driver_sql(sql, tuple(params[name] for name in names))

    def row(self, values: tuple[Any, ...], description: Any) -> Any:
        """A named tuple, read by attribute like SQLAlchemy's ``Row``."""
        if self._row is None:
            self._row = namedtuple("Row", [column[0] for column in description])  # type: ignore[misc]
        return self._row._make(values)


def _values_of(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The function that picks ``names``' values out of a dict, in order, as a tuple."""
    if not names:
        return lambda _params: ()
    if len(names) == 1:
        name = names[0]
        return lambda params: (params[name],)
    return operator.itemgetter(*names)


def _compile(statement: ClauseElement, dialect: Any) -> tuple[str, tuple[str, ...]]:
    """Driver SQL with positional parameters, and the names of the values they take, in order."""
    compiled = statement.compile(dialect=dialect)
    if compiled.positiontup is not None:
        return compiled.string, tuple(compiled.positiontup)
    raise ValueError(f"the {dialect.name} dialect does not bind positionally")
