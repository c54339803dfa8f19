"""The database handle: a read path and a write path, over SQLite or PostgreSQL.

Writes run in a transaction; reads run in autocommit. Correctness under concurrency comes
from the statements themselves (conditional ``UPDATE … RETURNING``, unique constraints), so
any number of processes may share one database.

PostgreSQL is served from asyncpg connections in grantd's own pool (``_PgPool``, ``_Pool``,
cheaper per request than asyncpg's): a write block is one pooled connection inside
``conn.transaction()``, a read block one pooled connection in autocommit. The store's functions
see a small wrapper (``_PgConnection``) offering what they use of SQLAlchemy's
``AsyncConnection``; SQLAlchemy Core only compiles their statements (asyncpg dialect, ``$n``
parameters), once per statement shape. SQLAlchemy's async engine stays for Alembic
(``engine_write``/``engine_read``) and for tests that use it directly.

SQLite is a library, not a server: a statement costs microseconds, far less than handing it
to a thread and back. So each process keeps two ``sqlite3`` connections used directly on the
event loop's thread (``_LoopSQLite``): one for reads (autocommit, so a read sees only
committed data) and one for writes, with *group commit*:

- A write block takes the process's write lock, joins the open transaction (or opens one
  with ``BEGIN IMMEDIATE``) inside its own ``SAVEPOINT``, and releases the lock at its end
  (an exception rolls back to the savepoint: only that block's changes are undone).
- The ``COMMIT`` runs two turns of the event loop later, once for every block that ended
  meanwhile, and only then does each of them return. A response is never sent before what
  it reports is committed. (Two turns, not one: the requests whose bytes arrive in the next
  turn's poll then join the group. A ``COMMIT`` costs the same for one block as for twenty.)
- Processes serving the same file take turns to write (``_WriteTurn``, an OS file lock
  waited for in a thread). A process that waits says so, and the one holding the turn then
  commits as soon as its own queued blocks have run instead of two turns later: otherwise the
  turn stays held across turns full of other requests' work while the other process's writes
  wait (two workers gave half the throughput of one). The blocks that queued while a process
  waited all run in the turn of the loop after the turn arrives (``_Gate``), not one per turn.
  Programs that do not take turns (the CLI) can still hold SQLite's
  lock: then ``BEGIN IMMEDIATE`` fails at once (``busy_timeout`` is 0 on this connection)
  and is retried with ``await asyncio.sleep``, so a busy database never blocks the event loop.

Hot statements (``Prepared``) are compiled once per dialect and run on the driver's cursor;
everything else runs through SQLAlchemy Core, on the same connections.
"""

from __future__ import annotations

import asyncio
import fcntl
import operator
import os
import queue
import sqlite3
import threading
import time
from collections import deque, namedtuple
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, create_engine, event, func, insert, literal_column, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound
from sqlalchemy.pool import NullPool, StaticPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import LRUCache

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=15000",
)
CHECKPOINT_INTERVAL = 0.5
# How long a writer waits for another process's SQLite write lock before giving up.
BUSY_TIMEOUT = 15.0


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._loop_sqlite: _LoopSQLite | None = None
        self._pg: _PgPool | None = None
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self._loop_sqlite = _LoopSQLite(parsed.database)
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._engine_autocommit: AsyncEngine | None = None
        if not self.is_sqlite:
            # Requests are served from asyncpg connections in grantd's pool (below). The engine
            # serves Alembic at start and tests: without a pool of its own, each use opens a fresh
            # connection, so none of them can meet one that a database restart left dead (no
            # pre-ping needed).
            # The connect arguments as SQLAlchemy's asyncpg dialect reads them from the URL; the
            # engine itself (and the asyncio extension and ORM it imports) is made only if used.
            self._pg = _PgPool(_pg_dialect().create_connect_args(parsed)[1], pool_size, pool_size + max_overflow)

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
                _configure_sqlite(self._engine)
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
            return _PgWrite(self._pg)
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
            return _PgRead(self._pg, None, single=True)
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
        return _PgRead(self._pg, None)

    def read(self) -> AbstractAsyncContextManager[Any]:
        """Autocommit reads of committed data."""
        if self._loop_sqlite is not None:
            return self._loop_sqlite.read()
        if self._pg is not None:
            return _PgRead(self._pg, self)
        return self._autocommit.connect()

    def pool_status(self) -> tuple[int, int, int, int] | None:
        """(size, checked out, idle, overflow) of the pool requests are served from; None when unknown."""
        if self._pg is not None:
            return self._pg.status()
        if self._loop_sqlite is not None:
            # Two fixed connections serve requests; the writer counts as in use while a
            # transaction is open.
            busy = 1 if self._loop_sqlite._in_transaction else 0
            return (2, busy, 2 - busy, 0)
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


class Prepared:
    """A hot statement, built once with ``bindparam`` names and compiled once for SQLite.

    ``await fetch_one(conn, STATEMENT, name=value, …)`` (and ``fetch_all``, ``run``) executes it
    on either kind of connection: on the loop SQLite connections straight on the ``sqlite3``
    cursor, elsewhere as driver SQL compiled once for that connection's dialect. Rows are read
    by column name either way.
    """

    __slots__ = ("statement", "_sqlite_sql", "_sqlite_params", "returns_rows", "_row", "_compiled", "_pg")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sqlite_sql, names = _compile(statement, _SQLITE_DIALECT)
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
            compiled = self.statement.compile(dialect=_pg_dialect())
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


async def fetch_one(conn: Any, prepared: Prepared, **params: Any) -> Any:
    if isinstance(conn, _LoopConnection):
        return conn.raw_one(prepared, params)
    if isinstance(conn, _PgConnection):
        return await conn.raw_one(prepared, params)
    return (await prepared.execute(conn, params)).first()


async def fetch_all(conn: Any, prepared: Prepared, **params: Any) -> Sequence[Any]:
    if isinstance(conn, _LoopConnection):
        return conn.raw_all(prepared, params)
    if isinstance(conn, _PgConnection):
        return await conn.raw_all(prepared, params)
    return (await prepared.execute(conn, params)).all()  # type: ignore[no-any-return]


async def run(conn: Any, prepared: Prepared, **params: Any) -> int:
    """Execute; the number of rows it changed."""
    if isinstance(conn, _LoopConnection):
        return conn.raw_run(prepared, params)
    if isinstance(conn, _PgConnection):
        return await conn.raw_run(prepared, params)
    return (await prepared.execute(conn, params)).rowcount  # type: ignore[no-any-return]


def upsert(conn: Any, table: Any) -> Any:
    """The dialect's ``INSERT`` of ``table``, which has ``on_conflict_do_update`` (both databases
    speak ``INSERT … ON CONFLICT``)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect  # its import loads every PostgreSQL driver module
    else:
        dialect = _sqlite_dialects  # type: ignore[assignment]
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


class _LoopConnection:
    """What the store's functions see of a loop SQLite connection: the subset of SQLAlchemy's
    ``AsyncConnection`` they use (``execute``, ``begin_nested``, ``dialect``, ``run_sync``), run
    synchronously, plus the raw path for ``Prepared`` statements."""

    def __init__(self, raw: sqlite3.Connection, sync: Connection) -> None:
        self._raw = raw
        self._sync = sync
        self.dialect = sync.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._sync.execute(statement, parameters)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self._sync.begin_nested():
            yield

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self._sync, *args)

    # A unique (or other integrity) violation is raised as SQLAlchemy's ``IntegrityError``, as from
    # a statement that SQLAlchemy runs and as on PostgreSQL (written out in each: a hot path).

    def raw_one(self, prepared: Prepared, params: dict[str, Any]) -> Any:
        try:
            cursor = self._raw.execute(prepared._sqlite_sql, prepared.sqlite_params(params))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(prepared._sqlite_sql, None, error) from error
        row = cursor.fetchone()
        if row is None:
            return None
        if cursor.fetchone() is not None:  # drain: a RETURNING statement runs to completion
            cursor.fetchall()
        return prepared.row(row, cursor.description)

    def raw_all(self, prepared: Prepared, params: dict[str, Any]) -> list[Any]:
        try:
            cursor = self._raw.execute(prepared._sqlite_sql, prepared.sqlite_params(params))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(prepared._sqlite_sql, None, error) from error
        return [prepared.row(row, cursor.description) for row in cursor.fetchall()]

    def raw_run(self, prepared: Prepared, params: dict[str, Any]) -> int:
        try:
            cursor = self._raw.execute(prepared._sqlite_sql, prepared.sqlite_params(params))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(prepared._sqlite_sql, None, error) from error
        if prepared.returns_rows:
            cursor.fetchall()
        return cursor.rowcount


class _LoopSQLite:
    def __init__(self, path: str) -> None:
        self._writer_raw, self._writer_engine, writer = _open(path)
        # Checkpoints copy the WAL into the database file and fsync it: milliseconds that would
        # stall every request on this loop. The writer leaves them to a thread of its own.
        self._writer_raw.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = _Checkpointer(path)
        self._turn = _WriteTurn(path)
        self._reader_raw, self._reader_engine, reader = _open(path, busy_timeout_ms=500)
        self.writer = _LoopConnection(self._writer_raw, writer)
        self.reader = _LoopConnection(self._reader_raw, reader)
        # Reads need nothing opened or closed: the reader is reused, in autocommit.
        self._reading = nullcontext(self.reader)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: _Gate | None = None
        self._in_transaction = False
        self._waiting: list[asyncio.Future[None]] = []
        self._commit_scheduled = False
        self._commit_deferred = False

    def _bind(self) -> _Gate:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            # A new event loop (tests run several, one after another). A transaction the old loop
            # left open was never committed, so none of its requests was answered: roll it back.
            if self._in_transaction:
                self._end("ROLLBACK")
            self._waiting, self._commit_scheduled, self._commit_deferred = [], False, False
            self._loop, self._lock = loop, _Gate(loop)
        return self._lock

    def read(self) -> AbstractAsyncContextManager[_LoopConnection]:
        return self._reading

    def write(self) -> _WriteBlock:
        return _WriteBlock(self)

    def _schedule_commit(self) -> None:
        """Whether a block's changes stand or were rolled back, the transaction it joined is
        committed two turns later: a failed block must not leave it (and the write lock) open.

        Sooner when another process waits for the turn: then the COMMIT runs as soon as no other
        block of this process is inside, waiting or woken (see ``_Gate``), instead of holding the
        turn across two turns of this loop's other work (parsing, signing) while the other
        process's writes wait."""
        if self._in_transaction and not self._lock.pending() and self._turn.wanted():  # type: ignore[union-attr]
            # No other block of this process is inside, waiting or about to run: commit now, and
            # the other process has the turn while this loop goes on with its other work.
            self._commit()
        elif not self._commit_scheduled:
            self._commit_scheduled = True
            self._loop.call_soon(self._commit_later)  # type: ignore[union-attr]

    def _commit_later(self) -> None:
        """The first of the two turns: the COMMIT now if another process has begun to wait."""
        if self._in_transaction and self._turn.wanted():
            self._commit()
        else:
            self._loop.call_soon(self._commit)  # type: ignore[union-attr]

    def _unlock(self, lock: _Gate) -> None:
        lock.release()
        if self._commit_deferred and not lock.locked():
            self._commit_deferred = False
            self._loop.call_soon(self._commit)  # type: ignore[union-attr]

    async def _begin(self) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT
        await self._turn.acquire(BUSY_TIMEOUT, self._lock)  # type: ignore[arg-type]
        try:
            delay = 0.0001
            while True:
                # Another grantd process waits for the turn instead; only other programs (the CLI,
                # a migration, sqlite3 itself) can hold SQLite's lock now, and they are polled for.
                try:
                    self._writer_raw.execute("BEGIN IMMEDIATE")
                    self._in_transaction = True
                    return
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or time.monotonic() > deadline:
                        raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.002)
        except BaseException:
            self._turn.release()
            raise

    def _end(self, statement: str) -> None:
        """COMMIT or ROLLBACK the open transaction, and hand the turn to the next process."""
        try:
            self._writer_raw.execute(statement)
        finally:
            self._in_transaction = False
            self._turn.release()

    def _commit(self) -> None:
        lock = self._lock
        if lock is not None and lock.locked():
            # A write block is between its statements (it awaited something): commit after it.
            self._commit_deferred = True
            return
        self._commit_scheduled = False
        waiting, self._waiting = self._waiting, []
        if not self._in_transaction:
            for done in waiting:
                if not done.done():
                    done.set_result(None)
            return
        try:
            self._writer_raw.execute("COMMIT")
        except BaseException as exc:
            try:
                self._end("ROLLBACK")
            except sqlite3.Error:
                pass
            for done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        self._in_transaction = False
        self._turn.release()
        for done in waiting:
            if not done.done():
                done.set_result(None)

    async def close(self) -> None:
        self._checkpointer.stop()
        if self._in_transaction:
            self._end("COMMIT")
        self._turn.close()
        for engine in (self._writer_engine, self._reader_engine):
            engine.dispose()
        for raw in (self._writer_raw, self._reader_raw):
            raw.close()


class _WriteBlock:
    """One write block on the loop SQLite connection: ``async with db.write() as tx`` takes the
    process's write lock, joins the open transaction (or begins one) in a savepoint, and on
    leaving releases the savepoint (or rolls back to it) and waits for the group's COMMIT.
    A class rather than ``@asynccontextmanager``: every token request goes through it."""

    __slots__ = ("_db", "_lock")

    def __init__(self, db: _LoopSQLite) -> None:
        self._db = db

    async def __aenter__(self) -> _LoopConnection:
        db = self._db
        lock = self._lock = db._bind()
        await lock.acquire()
        try:
            if not db._in_transaction:
                await db._begin()
            db._writer_raw.execute("SAVEPOINT grantd_write")
        except BaseException:
            db._schedule_commit()
            db._unlock(lock)
            raise
        return db.writer

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        db = self._db
        raw = db._writer_raw
        done: asyncio.Future[None] | None = None
        try:
            if exc_type is None:
                raw.execute("RELEASE grantd_write")
                done = db._loop.create_future()  # type: ignore[union-attr]
                db._waiting.append(done)
            else:
                raw.execute("ROLLBACK TO grantd_write")
                raw.execute("RELEASE grantd_write")
        finally:
            # Unlocked first: the blocks it wakes are then ahead of the COMMIT in the loop's queue.
            db._unlock(self._lock)
            db._schedule_commit()
        if done is not None:
            await done
        return False


class _Gate:
    """Admits a process's write blocks into the open transaction one at a time (a block may await
    between its statements; another block's savepoint must not nest inside its own).

    Unlike ``asyncio.Lock``, which hands over to one waiter per turn of the event loop, leaving
    wakes every waiter: they run one after the other in the next turn, the first takes the gate
    and, since a block rarely awaits between its statements, leaves it before the second runs. A
    queue of twenty blocks (those that gathered while the process waited for its write turn) then
    passes in one turn of the loop instead of twenty, and the turn is held that much less."""

    __slots__ = ("_held", "_waiters", "_woken", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._held = False
        self._waiters: list[asyncio.Future[None]] = []
        self._woken = 0  # waiters woken that have not run yet
        self._loop = loop

    def locked(self) -> bool:
        return self._held

    def pending(self) -> bool:
        """Whether a block is inside, waits, or was woken and is about to run."""
        return self._held or bool(self._waiters) or self._woken > 0

    async def acquire(self) -> None:
        if not self._held and not self._waiters:
            self._held = True
            return
        while True:
            woken = self._loop.create_future()
            self._waiters.append(woken)
            try:
                await woken
            except BaseException:
                if woken in self._waiters:
                    self._waiters.remove(woken)
                elif woken.done() and not woken.cancelled():
                    self._woken -= 1
                raise
            self._woken -= 1
            if not self._held:
                self._held = True
                return

    def release(self) -> None:
        self._held = False
        self.wake()

    def wake(self) -> None:
        """Wake every waiter; each takes the gate when it runs, or waits again if it is taken."""
        waiters, self._waiters = self._waiters, []
        for woken in waiters:
            if not woken.done():
                woken.set_result(None)
                self._woken += 1


class _WriteTurn:
    """The processes serving one SQLite file take turns to write: an OS file lock (``flock`` on
    ``<database>-writer``) held from ``BEGIN IMMEDIATE`` to ``COMMIT``.

    SQLite's own write lock cannot be waited for, only polled: a process that finds it taken
    sleeps and tries again, and under load one process starves while the other takes the lock
    again and again (requests waited up to a second with two workers). A file lock is waited
    for in the kernel, by a thread, and the waiter wakes the moment the holder lets go; while it
    waits, its event loop serves everything else. Free, it costs one system call to take.

    A process that waits says so: its waiting thread holds ``<database>-writer-wait`` shared
    until it has the turn. The holder asks (``wanted``, two system calls, no waiting) before it
    lets its transaction stay open for more blocks, and commits at once when someone waits. The
    kernel drops both locks of a process that dies, so neither can be left taken.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path + "-writer", os.O_RDWR | os.O_CREAT, 0o600)
        self._want = os.open(path + "-writer-wait", os.O_RDWR | os.O_CREAT, 0o600)
        self._held = False
        self._requests: queue.SimpleQueue[Any] | None = None
        # The thread's request in flight, and the futures of those on the loop that await it. A wait
        # abandoned (cancelled, timed out) leaves the request in flight: the next acquire awaits the
        # same one (asking again could not work: a lock already held through the same open file is
        # granted again at once), and a turn granted with nobody awaiting it is given straight back.
        self._inflight: asyncio.AbstractEventLoop | None = None
        self._awaiting: list[tuple[asyncio.Future[None], _Gate | None]] = []

    def wanted(self) -> bool:
        """Whether another process waits for the turn now."""
        try:
            fcntl.flock(self._want, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._want, fcntl.LOCK_UN)
        return False

    async def acquire(self, timeout: float, gate: _Gate | None = None) -> None:
        """Take the turn, waiting at most ``timeout`` seconds. When it comes from the waiting thread,
        ``gate``'s waiters (the blocks that queued meanwhile) are woken with the one that asked, so
        that all of them run in the next turn of the loop."""
        loop = asyncio.get_running_loop()
        if self._inflight is not None and self._inflight is not loop:
            self._inflight, self._awaiting = None, []  # asked for on an event loop that has gone
        if self._inflight is None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held = True
                return
            except BlockingIOError:
                pass
            self._inflight = loop
            if self._requests is None:
                # One thread for the life of the process: starting a thread per wait cost the loop
                # the time the new thread took to be scheduled.
                self._requests = queue.SimpleQueue()
                threading.Thread(
                    target=_wait_for_turns, args=(self._requests, self._fd, self._want), name="grantd-sqlite-turn", daemon=True
                ).start()
            self._requests.put((loop, self._granted))
        # Awaited directly (no wait_for, no shield): each future between the thread's hand-over and
        # this task would cost one more turn of the loop, with the turn held and unused.
        mine: asyncio.Future[None] = loop.create_future()
        entry = (mine, gate)
        self._awaiting.append(entry)
        timer = loop.call_later(timeout, _settle, mine, _TurnTimeout())
        try:
            await mine
        except BaseException as exc:
            if entry in self._awaiting:
                self._awaiting.remove(entry)
            elif mine.done() and not mine.cancelled() and mine.exception() is None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)  # granted, but this task was cancelled meanwhile
            if isinstance(exc, _TurnTimeout):
                raise sqlite3.OperationalError("database is locked: another process kept the write turn") from None
            raise
        finally:
            timer.cancel()
        self._held = True

    def _granted(self, error: BaseException | None) -> None:
        """On the loop: the waiting thread has the turn (or could not take it)."""
        self._inflight = None
        awaiting = [entry for entry in self._awaiting if not entry[0].done()]
        self._awaiting = []
        if error is not None:
            for mine, _gate in awaiting:
                mine.set_exception(error)
            return
        if not awaiting:
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # nobody awaits it any more: give it straight back
            return
        (mine, gate), rest = awaiting[0], awaiting[1:]
        mine.set_result(None)
        if gate is not None:
            gate.wake()
        if rest:  # not in practice (a process's blocks ask one at a time): they ask again
            loop = mine.get_loop()
            self._awaiting, self._inflight = rest, loop
            self._requests.put((loop, self._granted))  # type: ignore[union-attr]

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._requests is not None:
            self._requests.put(None)
        os.close(self._fd)
        os.close(self._want)


def _wait_for_turns(requests: queue.SimpleQueue[Any], fd: int, want: int) -> None:
    """The waiting thread of a ``_WriteTurn``: takes the turn for each request and hands it to the
    loop (or the error, when the files were closed: grantd is stopping). While it waits, it holds
    the wait file shared, which the holder sees (``_WriteTurn.wanted``)."""
    while (request := requests.get()) is not None:
        loop, granted = request
        try:
            fcntl.flock(want, fcntl.LOCK_SH)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(want, fcntl.LOCK_UN)
        except OSError as exc:
            error: BaseException | None = exc
        else:
            error = None
        try:
            loop.call_soon_threadsafe(granted, error)
        except RuntimeError:  # that loop is closed: nobody will take the turn from here
            if error is None:
                fcntl.flock(fd, fcntl.LOCK_UN)


class _TurnTimeout(Exception):
    """The write turn did not come in time (converted to SQLite's "database is locked")."""


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


class _Checkpointer:
    """A thread that checkpoints the WAL (``PASSIVE``: it never waits for, nor blocks, a writer or
    reader) every ``CHECKPOINT_INTERVAL`` seconds, on its own connection."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grantd-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopped.wait(CHECKPOINT_INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or gone: the next round tries again
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _open(path: str, busy_timeout_ms: int = 0) -> tuple[sqlite3.Connection, Any, Connection]:
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    for pragma in SQLITE_PRAGMAS:
        raw.execute(pragma)
    # The writer never waits inside SQLite (see _LoopSQLite._begin). A WAL reader waits only in
    # rare moments (another connection recovering the WAL): briefly, on the loop.
    raw.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")

    # SQLAlchemy runs on this very connection; it never commits (we do), and its own
    # "begin" for pysqlite issues nothing.
    engine = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool, hide_parameters=True)
    return raw, engine, engine.connect()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Take transaction control from the driver so that BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")


from sqlalchemy.dialects import sqlite as _sqlite_dialects  # noqa: E402

_SQLITE_DIALECT = _sqlite_dialects.dialect(paramstyle="qmark")


# ---------------------------------------------------------------- PostgreSQL, on asyncpg connections

# How many compiled Core statements each process keeps (SQLAlchemy's engine keeps 500).
PG_COMPILED_CACHE_SIZE = 500
# Connections kept open at least between requests: none, they are opened when needed, as
# SQLAlchemy's pool did; one idle this long (seconds) is closed.
PG_IDLE_LIFETIME = 300.0
# How long a block waits for a connection when all are in use (SQLAlchemy's pool_timeout).
PG_CHECKOUT_TIMEOUT = 30.0


def _pg_dialect() -> Any:
    global _PG_DIALECT
    if _PG_DIALECT is None:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        _PG_DIALECT = dialect()
    return _PG_DIALECT


_PG_DIALECT: Any = None
_ROW_CLASS: Any = None
_LOST: tuple[type[BaseException], ...] = ()
_INTEGRITY: Any = None  # asyncpg.IntegrityConstraintViolationError, once imported


def _asyncpg() -> Any:
    """asyncpg, imported on first use (an SQLite process never needs it), with grantd's row class."""
    global _ROW_CLASS, _LOST, _INTEGRITY
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
        # What a connection that died (a database restart, a dropped socket) raises when used.
        _LOST = (
            asyncpg.PostgresConnectionError,
            asyncpg.AdminShutdownError,
            asyncpg.InterfaceError,
            ConnectionError,
        )
    return asyncpg


def _is_lost(exc: BaseException, raw: Any) -> bool:
    """Whether ``exc`` says the connection itself is gone (rather than the statement failing)."""
    if isinstance(exc, _asyncpg().InterfaceError):
        return bool(raw.is_closed())  # "connection is closed", not a misuse
    return isinstance(exc, _LOST)


def _rowcount(status: str | None) -> int:
    """The row count of a command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    if not status:
        return -1
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else -1


class _PgPool:
    """The PostgreSQL connections of this process (``_Pool``), made on the running event loop at
    first use (and again on another loop: tests run several, one after another)."""

    def __init__(self, connect_kwargs: dict[str, Any], pool_size: int, max_size: int) -> None:
        kwargs = dict(connect_kwargs)
        # SQLAlchemy's URL options for its asyncpg adapter, in asyncpg's own words.
        if "prepared_statement_cache_size" in kwargs:
            kwargs["statement_cache_size"] = int(kwargs.pop("prepared_statement_cache_size"))
        kwargs.pop("prepared_statement_name_func", None)
        self._kwargs = kwargs
        self.pool_size = pool_size
        self.max_size = max_size
        self.pool: _Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.compiled: LRUCache[Any, Any] = LRUCache(PG_COMPILED_CACHE_SIZE)

    def get(self) -> _Pool:
        pool = self.pool
        if pool is not None and self._loop is asyncio.get_running_loop():
            return pool
        self._abandon()
        self._loop = loop = asyncio.get_running_loop()
        self.pool = pool = _Pool(self._connect, self.max_size, loop)
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


class _Pool:
    """asyncpg connections on one event loop, handed out newest first.

    asyncpg's own pool cost ~25 µs of CPU per check-out and return, measured: a proxy object and a
    queue per check-out, a shielded task and a reset under a timeout per return, and a timer re-armed
    each time. Here a check-out is a list pop and a return an append, and the rest of its behaviour
    is kept:

    - connections are opened when needed, up to ``max_size``, and one left idle for
      ``PG_IDLE_LIFETIME`` is closed (one timer for the whole pool);
    - when all are in use, a block waits for the next one returned, at most the timeout it gives;
    - a connection that is closed (a database restart, a dropped socket), or comes back inside a
      transaction or from a cancelled block (a statement may still be in flight on it), is never
      handed out again: it is cut, and a waiting block opens a new one instead.
    """

    __slots__ = ("_connect", "_max", "_loop", "_idle", "_size", "_waiters", "_reaper", "_closed")

    def __init__(self, connect: Callable[[], Any], max_size: int, loop: asyncio.AbstractEventLoop) -> None:
        self._connect = connect
        self._max = max_size
        self._loop = loop
        self._idle: list[tuple[Any, float]] = []  # (connection, when it came back), newest last
        self._size = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    def get_size(self) -> int:
        return self._size

    def get_idle_size(self) -> int:
        return len(self._idle)

    def get_max_size(self) -> int:
        return self._max

    async def acquire(self, timeout: float | None = None) -> Any:
        """A connection: an idle one, else a new one, else the next one returned (waiting at most
        ``timeout`` seconds, then ``TimeoutError``)."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        idle = self._idle
        while idle:
            conn = idle.pop()[0]
            if not conn.is_closed():
                return conn
            self._size -= 1  # closed while it sat here
        if self._size < self._max:
            return await self._open()
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            conn = await asyncio.wait_for(waiter, timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as the wait ended: pass it on.
                self._hand_over(waiter.result())
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise
        return conn if conn is not None else await self._open()

    async def _open(self) -> Any:
        self._size += 1
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._hand_over(None)  # a waiting block may open one instead
            raise

    def release(self, conn: Any, reusable: bool = True) -> None:
        """Take ``conn`` back; ``reusable=False`` (a cancelled block) cuts it."""
        if not reusable or self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._size -= 1
            self._hand_over(None)
            return
        self._hand_over(conn)

    def _hand_over(self, conn: Any) -> None:
        """``conn`` to the first block still waiting, else to the idle list. None hands over the
        right to open a connection (one was closed), and is kept by nobody if nobody waits."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append((conn, self._loop.time()))
            if self._reaper is None:
                self._reaper = self._loop.call_later(PG_IDLE_LIFETIME, self._reap)

    def _reap(self) -> None:
        """Close the connections idle for ``PG_IDLE_LIFETIME`` (the oldest are first in the list)."""
        self._reaper = None
        idle, cutoff = self._idle, self._loop.time() - PG_IDLE_LIFETIME
        stale = 0
        while stale < len(idle) and idle[stale][1] <= cutoff:
            stale += 1
        for conn, _ in idle[:stale]:
            conn.terminate()
        del idle[:stale]
        self._size -= stale
        if idle:
            self._reaper = self._loop.call_at(idle[0][1] + PG_IDLE_LIFETIME, self._reap)

    def _stop(self) -> list[Any]:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the connection pool is closed"))
        self._waiters.clear()
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        self._size -= len(idle)
        return idle

    async def close(self) -> None:
        """Close the idle connections; those in use are cut when they come back."""
        for conn in self._stop():
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - already gone
                conn.terminate()

    def terminate(self) -> None:
        """Cut every idle connection at once (also from another event loop, whose own may be closed)."""
        for conn in self._stop():
            try:
                conn.terminate()
            except Exception:  # noqa: BLE001 - that loop is gone; so are its sockets, or soon
                pass


class _PgWrite:
    """``async with db.write() as tx``: a pooled connection inside one transaction."""

    __slots__ = ("_pg", "_raw", "_tx", "_pool")

    def __init__(self, pg: _PgPool) -> None:
        self._pg = pg

    async def __aenter__(self) -> _PgConnection:
        pool = self._pool = self._pg.get()
        raw = await _acquire(pool)
        tx = raw.transaction()
        try:
            await tx.start()
        except BaseException as exc:
            lost = _is_lost(exc, raw)
            _release(pool, raw, exc)
            if not lost:
                raise
            # The connection died before this block used it (a database restart since its last
            # use): nothing was done on it, so begin again on another.
            raw = await _acquire(pool)
            tx = raw.transaction()
            try:
                await tx.start()
            except BaseException as exc:
                _release(pool, raw, exc)
                raise
        self._raw, self._tx = raw, tx
        return _PgConnection(raw, self._pg, None, None)  # no run_sync: it would not be this transaction

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        raw, tx = self._raw, self._tx
        try:
            if exc_type is None:
                try:
                    await tx.commit()
                except _INTEGRITY as error:  # a deferred constraint
                    raise IntegrityError("COMMIT", None, error) from error
            else:
                try:
                    await tx.rollback()
                except Exception:  # noqa: BLE001 - the block's own exception is the one to see
                    pass
        finally:
            _release(self._pool, raw, exc)


class _PgRead:
    """``async with db.read() as conn``: a pooled connection in autocommit (``single``: for
    ``write_one()``, allowed one statement)."""

    __slots__ = ("_pg", "_db", "_conn", "_pool", "_single")

    def __init__(self, pg: _PgPool, db: Database | None, single: bool = False) -> None:
        self._pg = pg
        self._db = db  # for run_sync, on SQLAlchemy's engine
        self._single = single

    async def __aenter__(self) -> _PgConnection:
        pool = self._pool = self._pg.get()
        if self._single:
            self._conn = conn = _PgConnection(await _acquire(pool), self._pg, pool, None, 1)
        else:
            self._conn = conn = _PgConnection(await _acquire(pool), self._pg, pool, self._db)
        return conn

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _release(self._pool, self._conn._raw, exc)


async def _acquire(pool: _Pool) -> Any:
    """A connection from the pool; when every one is in use, waiting at most ``PG_CHECKOUT_TIMEOUT``
    (then ``TimeoutError``), as SQLAlchemy's pool did."""
    return await pool.acquire(PG_CHECKOUT_TIMEOUT)


def _release(pool: _Pool, raw: Any, exc: BaseException | None = None) -> None:
    """Give ``raw`` back after a block that ended with ``exc``. A block cancelled (or otherwise
    stopped by a BaseException that is not an Exception) may have left a statement in flight:
    its connection is cut rather than reused."""
    pool.release(raw, reusable=exc is None or isinstance(exc, Exception))


class _PgResult:
    """What the store reads of SQLAlchemy's ``Result``: rows by ``first``/``all``/``one``/``scalar…``
    or by iteration, and ``rowcount``."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Any:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    fetchall = all

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> _PgResult:
        return _PgResult([row[0] for row in self._rows], self.rowcount)


class _PgConnection:
    """What the store's functions see of a pooled asyncpg connection: the subset of SQLAlchemy's
    ``AsyncConnection`` they use (``execute`` of Core and ``text()`` statements, ``begin_nested``,
    ``dialect``, ``run_sync`` on reads), plus the raw path for ``Prepared`` statements.

    A unique (or other integrity) violation is raised as SQLAlchemy's ``IntegrityError``, as the
    engine raised it. On a read connection, a SELECT that finds the connection dead (a restart
    since it was pooled) runs once more on a fresh one, if it is the block's first statement."""

    __slots__ = ("_raw", "_pg", "_retry_pool", "_db", "_statements_left")

    def __init__(self, raw: Any, pg: _PgPool, retry_pool: Any, db: Database | None, statements: int = -1) -> None:
        self._raw = raw
        self._pg = pg
        self._retry_pool = retry_pool  # a read's pool until its first statement has run
        self._db = db
        self._statements_left = statements  # a write_one() block's budget (-1: no limit)

    @property
    def dialect(self) -> Any:
        return _pg_dialect()

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

    async def execute(self, statement: Any, parameters: Any = None) -> _PgResult:
        if isinstance(parameters, (list, tuple)) and len(parameters) > 1:
            sql, rows = _bind_many(self._pg, statement, parameters)
            await self._call(_executemany, sql, rows, False)
            return _PgResult([], len(rows))
        if isinstance(parameters, (list, tuple)):
            parameters = parameters[0] if parameters else None
        sql, args, returns_rows, is_select = _bind(self._pg, statement, parameters)
        if returns_rows:
            rows = await self._call(_fetch, sql, args, is_select)
            return _PgResult(rows, len(rows))
        return _PgResult([], _rowcount(await self._call(_execute, sql, args, False)))

    def begin_nested(self) -> Any:
        """A savepoint (inside a write's transaction; on a read, a transaction of its own)."""
        if self._statements_left >= 0:
            raise RuntimeError("a write_one() block runs one statement: use write() for more")
        self._retry_pool = None
        return _Nested(self._raw.transaction())

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(sync_connection, *args)`` on a connection of SQLAlchemy's engine (Alembic needs
        one): for reads only, since it is not this connection."""
        if self._db is None:
            raise NotImplementedError("run_sync needs SQLAlchemy's connection: use db.engine_write()")
        async with self._db._autocommit.connect() as conn:
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
                raise
        # The block's first statement (a read's SELECT, or write_one()'s) found its connection dead
        # (killed while pooled): once more, on another.
        dead, self._raw = self._raw, await _acquire(pool)
        _release(pool, dead)
        try:
            return await how(self._raw, sql, args)
        except _INTEGRITY as error:
            raise IntegrityError(sql, None, error) from error


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


def _compiled(pg: _PgPool, statement: Any, column_keys: list[str], many: bool) -> tuple[Any, Any]:
    """The statement compiled for asyncpg, from the process's cache when one of the same shape was
    compiled before (SQLAlchemy's own cache key), and the bound values of this one's literals."""
    key = statement._generate_cache_key()
    if key is None:
        return statement.compile(dialect=_pg_dialect(), column_keys=column_keys, for_executemany=many), None
    cache_key = (key.key, tuple(column_keys), many)
    compiled = pg.compiled.get(cache_key)
    if compiled is None:
        compiled = statement.compile(dialect=_pg_dialect(), cache_key=key, column_keys=column_keys, for_executemany=many)
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


def _bind(pg: _PgPool, statement: Any, parameters: dict[str, Any] | None) -> tuple[str, tuple[Any, ...], bool, bool]:
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


def _bind_many(pg: _PgPool, statement: Any, parameters: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
    compiled, key = _compiled(pg, statement, sorted(parameters[0]), True)
    rows = []
    sql = compiled.string
    for one in parameters:
        sql, values = _values(compiled, key, one)
        rows.append(values)
    return sql, rows
