"""The PostgreSQL engine: read and write blocks on asyncpg connections, with SQLAlchemy Core compiling.

PostgreSQL is served from asyncpg connections in grantd's own pool (``store.pg_pool``, cheaper
per request than asyncpg's): a write block is one pooled connection inside
``conn.transaction()``, a read block one pooled connection in autocommit. The store's functions
see a small wrapper (``PgConnection``) offering what they use of SQLAlchemy's
``AsyncConnection``, and read what it returns as SQLAlchemy's ``Result`` (``store.result``);
SQLAlchemy Core only compiles their statements (asyncpg dialect, ``$n`` parameters), once per
statement shape, and ``Prepared`` statements once each. asyncpg itself is imported on first
use: an SQLite process never needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.util import LRUCache

from grantd.store import pg_pool
from grantd.store.availability import Availability, DatabaseUnavailable
from grantd.store.prepared import pg_dialect
from grantd.store.result import Result

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection

    from grantd.store.prepared import Prepared

    _EngineRead = Callable[[], AbstractAsyncContextManager[AsyncConnection]]

# How many compiled Core statements each process keeps (SQLAlchemy's engine keeps 500).
COMPILED_CACHE_SIZE = 500

_ROW_CLASS: Any = None
_LOST: tuple[type[BaseException], ...] = ()
_INTEGRITY: Any = None  # asyncpg.IntegrityConstraintViolationError, once imported
# What says the database cannot serve now (besides a lost connection): the operator stopped it or
# cancelled the statement (class 57: shutdown, statement_timeout), or it ran out of something
# (class 53: disk, memory, connections).
_REFUSING: tuple[type[BaseException], ...] = ()


def _asyncpg() -> Any:
    """asyncpg, imported on first use (an SQLite process never needs it), with grantd's row class."""
    global _ROW_CLASS, _LOST, _INTEGRITY, _REFUSING
    import asyncpg

    if _ROW_CLASS is None:

        class Row(asyncpg.Record):  # type: ignore[misc]
            """asyncpg's record, also read by attribute like SQLAlchemy's ``Row``."""

            def __getattr__(self, name: str) -> Any:
                try:
                    return self[name]
                except KeyError:
                    raise AttributeError(name) from None

            @property
            def _mapping(self) -> dict[str, Any]:
                return dict(self.items())

            def _asdict(self) -> dict[str, Any]:
                return dict(self.items())

        _ROW_CLASS = Row
        _INTEGRITY = asyncpg.IntegrityConstraintViolationError
        # What a connection that died (a database restart, a dropped socket) raises when used. A
        # connection that got the server's shutdown message but not yet the end of its socket says
        # that an operation is still in progress (InternalClientError).
        _LOST = (
            asyncpg.PostgresConnectionError,
            asyncpg.AdminShutdownError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            ConnectionError,
        )
        _REFUSING = (asyncpg.OperatorInterventionError, asyncpg.InsufficientResourcesError, OSError, TimeoutError)
    return asyncpg


def _is_lost(exc: BaseException, raw: Any) -> bool:
    """Whether ``exc`` says the connection itself is gone (rather than the statement failing)."""
    if isinstance(exc, _asyncpg().InterfaceError):
        return bool(raw.is_closed())  # "connection is closed", not a misuse
    return isinstance(exc, _LOST)


def _unavailable(exc: BaseException, raw: Any) -> str | None:
    """The word for why ``exc`` says the database is unavailable (``raw``: the connection it came
    from, or None), else None: the statement itself failed."""
    asyncpg = _asyncpg()
    if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        return "unreachable"  # no route, no such host
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection_lost" if raw is not None and raw.is_closed() else None
    if isinstance(exc, asyncpg.InternalClientError):
        return "connection_lost"
    if isinstance(exc, asyncpg.InsufficientResourcesError):
        return "disk_full" if isinstance(exc, asyncpg.DiskFullError) else "out_of_resources"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return "starting_or_stopping"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return "read_only"  # a standby, or a primary set read-only: no write can succeed here now
    if isinstance(exc, _LOST) or isinstance(exc, _REFUSING):
        return "connection_lost"
    return None


def _rowcount(status: str | None) -> int:
    """The row count of a command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    if not status:
        return -1
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else -1


class Postgres:
    """A process's PostgreSQL for requests: ``read()``, ``write()``, ``write_one()`` and
    ``autocommit()`` blocks on the connections of its ``pg_pool.Pool``, made on the running event
    loop at first use (and again on another loop: tests run several, one after another), and the
    Core statements compiled for them.

    ``engine_read`` opens an autocommit connection of SQLAlchemy's engine, for a read block's
    ``run_sync`` (Alembic needs SQLAlchemy's connection)."""

    def __init__(
        self, url: URL, pool_size: int, max_size: int, engine_read: _EngineRead, availability: Availability, timeout: float
    ) -> None:
        # The connect arguments as SQLAlchemy's asyncpg dialect reads them from the URL.
        kwargs = dict(pg_dialect().create_connect_args(url)[1])
        # SQLAlchemy's URL options for its asyncpg adapter, in asyncpg's own words.
        if "prepared_statement_cache_size" in kwargs:
            kwargs["statement_cache_size"] = int(kwargs.pop("prepared_statement_cache_size"))
        kwargs.pop("prepared_statement_name_func", None)
        # Bounded waits (GRANTD_DATABASE_TIMEOUT): to connect (asyncpg's default is 60 s) and for each
        # statement's answer (asyncpg's default: for ever).
        kwargs["timeout"] = timeout
        kwargs["command_timeout"] = timeout
        self._kwargs = kwargs
        self.timeout = timeout
        self.availability = availability
        self.pool_size = pool_size
        self.max_size = max_size
        self.pool: pg_pool.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.compiled: LRUCache[Any, Any] = LRUCache(COMPILED_CACHE_SIZE)
        self._engine_read = engine_read

    def write(self) -> AbstractAsyncContextManager[PgConnection]:
        return _PgWrite(self)

    def write_one(self) -> AbstractAsyncContextManager[PgConnection]:
        return _PgRead(self, None, single=True)

    def autocommit(self) -> AbstractAsyncContextManager[PgConnection]:
        return _PgRead(self, None)

    def read(self) -> AbstractAsyncContextManager[PgConnection]:
        return _PgRead(self, self._engine_read)

    def get(self) -> pg_pool.Pool:
        pool = self.pool
        if pool is not None and self._loop is asyncio.get_running_loop() and not self.availability.gated:
            return pool
        if self.availability.gated:
            self.availability.admit()  # DatabaseUnavailable at once, but for one block a second
            if pool is not None and self._loop is asyncio.get_running_loop():
                return pool
        self._abandon()
        self._loop = loop = asyncio.get_running_loop()
        self.pool = pool = pg_pool.Pool(self._connect, self.max_size, loop)
        return pool

    async def _connect(self) -> Any:
        return await _asyncpg().connect(record_class=_ROW_CLASS, **self._kwargs)

    def _abandon(self) -> None:
        """Drop the pool of a previous event loop (its connections cannot be used from this one)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.terminate()

    def status(self) -> tuple[int, int, int, int]:
        pool = self.pool
        if pool is None:
            return (self.pool_size, 0, 0, 0)
        size, idle = pool.get_size(), pool.get_idle_size()
        return (self.pool_size, size - idle, idle, max(0, size - self.pool_size))

    async def close(self) -> None:
        pool, loop = self.pool, self._loop
        self.pool, self._loop = None, None
        if pool is None:
            return
        if loop is not asyncio.get_running_loop():
            pool.terminate()
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except Exception:  # noqa: BLE001 - a connection still busy: cut it
            pool.terminate()


class _PgWrite:
    """``async with db.write() as tx``: a pooled connection inside one transaction."""

    __slots__ = ("_pg", "_raw", "_tx", "_pool")

    def __init__(self, pg: Postgres) -> None:
        self._pg = pg

    async def __aenter__(self) -> PgConnection:
        pg = self._pg
        pool = self._pool = pg.get()
        raw = await _acquire(pg, pool)
        tx = raw.transaction()
        try:
            await tx.start()
        except BaseException as exc:
            lost = _is_lost(exc, raw)
            if lost:
                pool.release(raw, reusable=False)
            else:
                _release(pool, raw, exc)
            if not lost:
                raise _converted(pg, exc, raw)
            # The connection died before this block used it (a database restart since its last
            # use): nothing was done on it, so begin again on another.
            raw = await _acquire(pg, pool)
            tx = raw.transaction()
            try:
                await tx.start()
            except BaseException as exc:
                _release(pool, raw, exc)
                raise _converted(pg, exc, raw)
        self._raw, self._tx = raw, tx
        return PgConnection(raw, self._pg, None, None)  # no run_sync: it would not be this transaction

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        raw, tx, pg = self._raw, self._tx, self._pg
        try:
            if exc_type is None:
                try:
                    await tx.commit()
                except _INTEGRITY as error:  # a deferred constraint
                    raise IntegrityError("COMMIT", None, error) from error
                except BaseException as error:
                    exc = error
                    raise _converted(pg, error, raw)
                if pg.availability.down_since is not None:
                    pg.availability.answered()
            else:
                if isinstance(exc, DatabaseUnavailable):
                    return  # the connection is cut below: no ROLLBACK to wait for
                if isinstance(exc, Exception) and _unavailable(exc, raw) is not None:
                    # Raised by the driver outside a statement (a savepoint): the same answer.
                    exc = _converted(pg, exc, raw)
                    raise exc
                try:
                    await tx.rollback()
                except Exception:  # noqa: BLE001 - the block's own exception is the one to see
                    pass
        finally:
            _release(self._pool, raw, exc)


class _PgRead:
    """``async with db.read() as conn``: a pooled connection in autocommit (``single``: for
    ``write_one()``, allowed one statement)."""

    __slots__ = ("_pg", "_engine_read", "_conn", "_pool", "_single")

    def __init__(self, pg: Postgres, engine_read: _EngineRead | None, single: bool = False) -> None:
        self._pg = pg
        self._engine_read = engine_read  # for run_sync, on SQLAlchemy's engine
        self._single = single

    async def __aenter__(self) -> PgConnection:
        pg = self._pg
        pool = self._pool = pg.get()
        if self._single:
            self._conn = conn = PgConnection(await _acquire(pg, pool), pg, pool, None, 1)
        else:
            self._conn = conn = PgConnection(await _acquire(pg, pool), pg, pool, self._engine_read)
        return conn

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        raw = self._conn._raw
        if exc is None:
            _release(self._pool, raw)
            if self._pg.availability.down_since is not None:
                self._pg.availability.answered()
            return
        if isinstance(exc, Exception) and not isinstance(exc, DatabaseUnavailable) and _unavailable(exc, raw) is not None:
            exc = _converted(self._pg, exc, raw)  # raised by the driver outside a statement
            _release(self._pool, raw, exc)
            raise exc
        _release(self._pool, raw, exc)


async def _acquire(pg: Postgres, pool: pg_pool.Pool) -> Any:
    """A connection from the pool; when every one is in use, waiting at most the database timeout.
    Refused, timed out (connecting or waiting): ``DatabaseUnavailable``."""
    try:
        return await pool.acquire(pg.timeout)
    except BaseException as exc:
        raise _converted(pg, exc, None)


def _converted(pg: Postgres, exc: BaseException, raw: Any) -> BaseException:
    """What to raise for ``exc``: ``DatabaseUnavailable`` (the outage recorded) when it says the
    database cannot serve now, else ``exc`` itself."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if isinstance(exc, pg_pool.PoolTimeout):
        unavailable = pg.availability.busy("pool_exhausted")
        unavailable.__cause__ = exc
        return unavailable
    reason = _unavailable(exc, raw) if isinstance(exc, Exception) else None
    if reason is None:
        return exc
    unavailable = pg.availability.failed(reason)
    unavailable.__cause__ = exc
    return unavailable


def _release(pool: pg_pool.Pool, raw: Any, exc: BaseException | None = None) -> None:
    """Give ``raw`` back after a block that ended with ``exc``. A block cancelled (or otherwise
    stopped by a BaseException that is not an Exception) may have left a statement in flight, and
    one that found the database unavailable (a statement timed out) may still have one: its
    connection is cut rather than reused."""
    pool.release(raw, reusable=exc is None or (isinstance(exc, Exception) and not isinstance(exc, DatabaseUnavailable)))


class PgConnection:
    """What the store's functions see of a pooled asyncpg connection: the subset of SQLAlchemy's
    ``AsyncConnection`` they use (``execute`` of Core and ``text()`` statements, ``begin_nested``,
    ``dialect``, ``run_sync`` on reads), plus the raw path for ``Prepared`` statements.

    A unique (or other integrity) violation is raised as SQLAlchemy's ``IntegrityError``, as the
    engine raised it. On a read connection, a SELECT that finds the connection dead (a restart
    since it was pooled) runs once more on a fresh one, if it is the block's first statement."""

    __slots__ = ("_raw", "_pg", "_retry_pool", "_engine_read", "_statements_left")

    def __init__(
        self, raw: Any, pg: Postgres, retry_pool: Any, engine_read: _EngineRead | None, statements: int = -1
    ) -> None:
        self._raw = raw
        self._pg = pg
        self._retry_pool = retry_pool  # a read's pool until its first statement has run
        self._engine_read = engine_read
        self._statements_left = statements  # a write_one() block's budget (-1: no limit)

    @property
    def dialect(self) -> Any:
        return pg_dialect()

    # -- Prepared statements: SQL compiled once, run on asyncpg's statement cache

    async def raw_one(self, prepared: Prepared, params: dict[str, Any]) -> Any:
        sql, values = prepared.pg()
        return await self._call(_fetchrow, sql, values(params), prepared.statement.is_select)

    async def raw_all(self, prepared: Prepared, params: dict[str, Any]) -> list[Any]:
        sql, values = prepared.pg()
        return await self._call(_fetch, sql, values(params), prepared.statement.is_select)  # type: ignore[no-any-return]

    async def raw_run(self, prepared: Prepared, params: dict[str, Any]) -> int:
        sql, values = prepared.pg()
        if prepared.returns_rows:
            return len(await self._call(_fetch, sql, values(params), prepared.statement.is_select))
        return _rowcount(await self._call(_execute, sql, values(params), False))

    # -- SQLAlchemy Core and text() statements

    async def execute(self, statement: Any, parameters: Any = None) -> Result:
        if isinstance(parameters, (list, tuple)) and len(parameters) > 1:
            sql, rows = _bind_many(self._pg, statement, parameters)
            await self._call(_executemany, sql, rows, False)
            return Result([], len(rows))
        if isinstance(parameters, (list, tuple)):
            parameters = parameters[0] if parameters else None
        sql, args, returns_rows, is_select = _bind(self._pg, statement, parameters)
        if returns_rows:
            rows = await self._call(_fetch, sql, args, is_select)
            return Result(rows, len(rows))
        return Result([], _rowcount(await self._call(_execute, sql, args, False)))

    def begin_nested(self) -> Any:
        """A savepoint (inside a write's transaction; on a read, a transaction of its own)."""
        if self._statements_left >= 0:
            raise RuntimeError("a write_one() block runs one statement: use write() for more")
        self._retry_pool = None
        return _Nested(self._raw.transaction())

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(sync_connection, *args)`` on a connection of SQLAlchemy's engine (Alembic needs
        one): for reads only, since it is not this connection."""
        if self._engine_read is None:
            raise NotImplementedError("run_sync needs SQLAlchemy's connection: use db.engine_write()")
        async with self._engine_read() as conn:
            return await conn.run_sync(fn, *args)

    async def _call(self, how: Callable[..., Any], sql: str, args: Any, retryable: bool) -> Any:
        if self._statements_left >= 0:
            if self._statements_left == 0:
                raise RuntimeError("a write_one() block runs one statement: use write() for more")
            self._statements_left = 0
            retryable = True  # write_one()'s statement may run twice (see Database.write_one)
        pool, self._retry_pool = self._retry_pool, None
        try:
            return await how(self._raw, sql, args)
        except _INTEGRITY as error:
            raise IntegrityError(sql, None, error) from error
        except _LOST as error:
            if pool is None or not retryable or not _is_lost(error, self._raw):
                raise _converted(self._pg, error, self._raw)
        except Exception as error:  # a timeout, a shutdown: DatabaseUnavailable; a bad statement stays itself
            raise _converted(self._pg, error, self._raw)
        # The block's first statement (a read's SELECT, or write_one()'s) found its connection dead
        # (killed while pooled): once more, on another.
        dead, self._raw = self._raw, await _acquire(self._pg, pool)
        pool.release(dead, reusable=False)
        try:
            return await how(self._raw, sql, args)
        except _INTEGRITY as error:
            raise IntegrityError(sql, None, error) from error
        except Exception as error:
            raise _converted(self._pg, error, self._raw)


class _Nested:
    """``async with conn.begin_nested()``: asyncpg's nested transaction is a savepoint."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Any) -> None:
        self._tx = tx

    async def __aenter__(self) -> None:
        await self._tx.__aenter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        return await self._tx.__aexit__(exc_type, exc, tb)


async def _fetchrow(raw: Any, sql: str, args: tuple[Any, ...]) -> Any:
    return await raw.fetchrow(sql, *args)


async def _fetch(raw: Any, sql: str, args: tuple[Any, ...]) -> Any:
    return await raw.fetch(sql, *args)


async def _execute(raw: Any, sql: str, args: tuple[Any, ...]) -> Any:
    return await raw.execute(sql, *args)


async def _executemany(raw: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    await raw.executemany(sql, rows)


_ROW_RETURNING_TEXT = ("select", "with", "values", "show", "table", "explain")


def _compiled(pg: Postgres, statement: Any, column_keys: list[str], many: bool) -> tuple[Any, Any]:
    """The statement compiled for asyncpg, from the process's cache when one of the same shape was
    compiled before (SQLAlchemy's own cache key), and the bound values of this one's literals."""
    key = statement._generate_cache_key()
    if key is None:
        return statement.compile(dialect=pg_dialect(), column_keys=column_keys, for_executemany=many), None
    cache_key = (key.key, tuple(column_keys), many)
    compiled = pg.compiled.get(cache_key)
    if compiled is None:
        compiled = statement.compile(dialect=pg_dialect(), cache_key=key, column_keys=column_keys, for_executemany=many)
        pg.compiled[cache_key] = compiled
    return compiled, key


def _values(compiled: Any, key: Any, parameters: dict[str, Any] | None) -> tuple[str, tuple[Any, ...]]:
    collected = getattr(key, "params", None) if key is not None else None
    if collected:
        parameters = {**collected, **(parameters or {})}
    values = compiled.construct_params(parameters, extracted_parameters=None if key is None else key.bindparams)
    processors = compiled._bind_processors
    if compiled.post_compile_params or compiled.literal_execute_params:  # IN (…) of a list
        state = compiled.construct_expanded_state(values)
        processors = {**processors, **state.processors}
        sql, names, values = state.statement, state.positiontup, state.parameters
    else:
        sql, names = compiled.string, compiled.positiontup or ()
    if processors:
        return sql, tuple(processors[n](values[n]) if n in processors else values[n] for n in names)
    return sql, tuple(values[n] for n in names)


def _bind(pg: Postgres, statement: Any, parameters: dict[str, Any] | None) -> tuple[str, tuple[Any, ...], bool, bool]:
    """Driver SQL and positional values for a Core or ``text()`` statement; whether it returns rows
    and whether it is a SELECT."""
    compiled, key = _compiled(pg, statement, sorted(parameters) if parameters else [], False)
    sql, args = _values(compiled, key, parameters)
    if compiled.isplaintext:
        returns_rows = sql.lstrip().lower().startswith(_ROW_RETURNING_TEXT)
        return sql, args, returns_rows, False
    is_select = bool(getattr(statement, "is_select", False))
    returns_rows = is_select or bool(compiled.effective_returning)
    return sql, args, returns_rows, is_select


def _bind_many(pg: Postgres, statement: Any, parameters: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
    compiled, key = _compiled(pg, statement, sorted(parameters[0]), True)
    rows = []
    sql = compiled.string
    for one in parameters:
        sql, values = _values(compiled, key, one)
        rows.append(values)
    return sql, rows
