"""The database handle: a read path and a write path, over SQLite or PostgreSQL.

Writes run in a transaction; reads run in autocommit. Correctness under concurrency comes
from the statements themselves (conditional ``UPDATE … RETURNING``, unique constraints), so
any number of processes may share one database.

PostgreSQL goes through SQLAlchemy's async engine (asyncpg).

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
  waited for in a thread). Programs that do not take turns (the CLI) can still hold SQLite's
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
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ClauseElement

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
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._loop_sqlite: _LoopSQLite | None = None
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self._loop_sqlite = _LoopSQLite(parsed.database)
            # Migrations (Alembic) and tests use the engine; requests use the loop connections.
            self.engine: AsyncEngine = create_async_engine(url, pool_size=pool_size, max_overflow=10, hide_parameters=True)
            _configure_sqlite(self.engine)
        else:
            self.engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, hide_parameters=True
            )
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def write(self) -> AbstractAsyncContextManager[Any]:
        """A transaction: committed when the block ends (on SQLite, with the other blocks of this turn)."""
        if self._loop_sqlite is not None:
            return self._loop_sqlite.write()
        return self.engine.begin()

    def read(self) -> AbstractAsyncContextManager[Any]:
        """Autocommit reads of committed data."""
        if self._loop_sqlite is not None:
            return self._loop_sqlite.read()
        return self._autocommit.connect()

    def engine_write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction on the SQLAlchemy engine itself (Alembic needs its connection)."""
        return self.engine.begin()

    def engine_read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._autocommit.connect()

    async def dispose(self) -> None:
        if self._loop_sqlite is not None:
            await self._loop_sqlite.close()
        await self.engine.dispose()


class Prepared:
    """A hot statement, built once with ``bindparam`` names and compiled once for SQLite.

    ``await fetch_one(conn, STATEMENT, name=value, …)`` (and ``fetch_all``, ``run``) executes it
    on either kind of connection: on the loop SQLite connections straight on the ``sqlite3``
    cursor, elsewhere as driver SQL compiled once for that connection's dialect. Rows are read
    by column name either way.
    """

    __slots__ = ("statement", "_sqlite_sql", "_sqlite_params", "returns_rows", "_row", "_compiled")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sqlite_sql, names = _compile(statement, _SQLITE_DIALECT)
        self._sqlite_params = _values_of(names)
        self.returns_rows = bool(getattr(statement, "_returning", None)) or statement.is_select  # type: ignore[attr-defined]
        self._row: Any = None
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def sqlite_params(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return self._sqlite_params(params)  # type: ignore[no-any-return]

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
    return (await prepared.execute(conn, params)).first()


async def fetch_all(conn: Any, prepared: Prepared, **params: Any) -> Sequence[Any]:
    if isinstance(conn, _LoopConnection):
        return conn.raw_all(prepared, params)
    return (await prepared.execute(conn, params)).all()  # type: ignore[no-any-return]


async def run(conn: Any, prepared: Prepared, **params: Any) -> int:
    """Execute; the number of rows it changed."""
    if isinstance(conn, _LoopConnection):
        return conn.raw_run(prepared, params)
    return (await prepared.execute(conn, params)).rowcount  # type: ignore[no-any-return]


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

    def raw_one(self, prepared: Prepared, params: dict[str, Any]) -> Any:
        cursor = self._raw.execute(prepared._sqlite_sql, prepared.sqlite_params(params))
        row = cursor.fetchone()
        if row is None:
            return None
        if cursor.fetchone() is not None:  # drain: a RETURNING statement runs to completion
            cursor.fetchall()
        return prepared.row(row, cursor.description)

    def raw_all(self, prepared: Prepared, params: dict[str, Any]) -> list[Any]:
        cursor = self._raw.execute(prepared._sqlite_sql, prepared.sqlite_params(params))
        return [prepared.row(row, cursor.description) for row in cursor.fetchall()]

    def raw_run(self, prepared: Prepared, params: dict[str, Any]) -> int:
        cursor = self._raw.execute(prepared._sqlite_sql, prepared.sqlite_params(params))
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
        self._lock: asyncio.Lock | None = None
        self._in_transaction = False
        self._waiting: list[asyncio.Future[None]] = []
        self._commit_scheduled = False
        self._commit_deferred = False

    def _bind(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            # A new event loop (tests run several, one after another). A transaction the old loop
            # left open was never committed, so none of its requests was answered: roll it back.
            if self._in_transaction:
                self._end("ROLLBACK")
            self._waiting, self._commit_scheduled, self._commit_deferred = [], False, False
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock

    def read(self) -> AbstractAsyncContextManager[_LoopConnection]:
        return self._reading

    def write(self) -> _WriteBlock:
        return _WriteBlock(self)

    def _schedule_commit(self) -> None:
        """Whether a block's changes stand or were rolled back, the transaction it joined is
        committed two turns later: a failed block must not leave it (and the write lock) open."""
        if not self._commit_scheduled:
            self._commit_scheduled = True
            loop = self._loop
            loop.call_soon(loop.call_soon, self._commit)  # type: ignore[union-attr]

    def _unlock(self, lock: asyncio.Lock) -> None:
        lock.release()
        if self._commit_deferred and not lock.locked():
            self._commit_deferred = False
            self._loop.call_soon(self._commit)  # type: ignore[union-attr]

    async def _begin(self) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT
        await self._turn.acquire(BUSY_TIMEOUT)
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
            try:
                if exc_type is None:
                    raw.execute("RELEASE grantd_write")
                    done = db._loop.create_future()  # type: ignore[union-attr]
                    db._waiting.append(done)
                else:
                    raw.execute("ROLLBACK TO grantd_write")
                    raw.execute("RELEASE grantd_write")
            finally:
                db._schedule_commit()
        finally:
            db._unlock(self._lock)
        if done is not None:
            await done
        return False


class _WriteTurn:
    """The processes serving one SQLite file take turns to write: an OS file lock (``flock`` on
    ``<database>-writer``) held from ``BEGIN IMMEDIATE`` to ``COMMIT``.

    SQLite's own write lock cannot be waited for, only polled: a process that finds it taken
    sleeps and tries again, and under load one process starves while the other takes the lock
    again and again (requests waited up to a second with two workers). A file lock is waited
    for in the kernel, by a thread, and the waiter wakes the moment the holder lets go; while it
    waits, its event loop serves everything else. Free, it costs one system call to take.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path + "-writer", os.O_RDWR | os.O_CREAT, 0o600)
        self._held = False

    async def acquire(self, timeout: float) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await self._wait(timeout)
        self._held = True

    async def _wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()
        fd = self._fd

        def wait() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # the file was closed: grantd is stopping
                loop.call_soon_threadsafe(_settle, taken, exc)
                return
            loop.call_soon_threadsafe(_settle, taken, None)

        def settled(future: asyncio.Future[None]) -> None:
            # Nobody awaits the turn any more (timed out, cancelled): give it straight back.
            if not future.cancelled() and future.exception() is None:
                fcntl.flock(fd, fcntl.LOCK_UN)

        threading.Thread(target=wait, name="grantd-sqlite-turn", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(taken), timeout)
        except TimeoutError:
            taken.add_done_callback(settled)
            raise sqlite3.OperationalError("database is locked: another process kept the write turn") from None
        except BaseException:
            taken.add_done_callback(settled)
            raise

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        os.close(self._fd)


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
