"""The SQLite engine: two ``sqlite3`` connections used directly on the event loop, with group commit.

SQLite is a library, not a server: a statement costs microseconds, far less than handing it
to a thread and back. So each process keeps two ``sqlite3`` connections used directly on the
event loop's thread (``LoopSQLite``): one for reads (autocommit, so a read sees only
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

Checkpoints run on a thread of their own (``_Checkpointer``). SQLAlchemy runs on the same two
connections (``LoopConnection``); ``Prepared`` statements run straight on their cursors.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from grantd.store.availability import Availability, DatabaseUnavailable, sqlite_reason

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from grantd.store.prepared import Prepared

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=15000",
)
CHECKPOINT_INTERVAL = 0.5
# How long a writer waits for another process's SQLite write lock before giving up.
BUSY_TIMEOUT = 15.0


class LoopConnection:
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
            cursor = self._raw.execute(prepared.sqlite_sql, prepared.sqlite_params(params))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(prepared.sqlite_sql, None, error) from error
        row = cursor.fetchone()
        if row is None:
            return None
        if cursor.fetchone() is not None:  # drain: a RETURNING statement runs to completion
            cursor.fetchall()
        return prepared.row(row, cursor.description)

    def raw_all(self, prepared: Prepared, params: dict[str, Any]) -> list[Any]:
        try:
            cursor = self._raw.execute(prepared.sqlite_sql, prepared.sqlite_params(params))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(prepared.sqlite_sql, None, error) from error
        return [prepared.row(row, cursor.description) for row in cursor.fetchall()]

    def raw_run(self, prepared: Prepared, params: dict[str, Any]) -> int:
        try:
            cursor = self._raw.execute(prepared.sqlite_sql, prepared.sqlite_params(params))
        except sqlite3.IntegrityError as error:
            raise IntegrityError(prepared.sqlite_sql, None, error) from error
        if prepared.returns_rows:
            cursor.fetchall()
        return cursor.rowcount


class LoopSQLite:
    """A process's two connections to one SQLite file, on its event loop: ``read()`` and
    ``write()`` (group commit, the write turn), and the checkpoint thread."""

    def __init__(self, path: str, availability: Availability | None = None) -> None:
        self.availability = availability if availability is not None else Availability("sqlite")
        self._writer_raw, self._writer_engine, writer = _open(path)
        # Checkpoints copy the WAL into the database file and fsync it: milliseconds that would
        # stall every request on this loop. The writer leaves them to a thread of its own.
        self._writer_raw.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = _Checkpointer(path)
        self._turn = _WriteTurn(path)
        self._reader_raw, self._reader_engine, reader = _open(path, busy_timeout_ms=500)
        self.writer = LoopConnection(self._writer_raw, writer)
        self.reader = LoopConnection(self._reader_raw, reader)
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

    def read(self) -> AbstractAsyncContextManager[LoopConnection]:
        return self._reading

    def write(self) -> _WriteBlock:
        return _WriteBlock(self)

    def status(self) -> tuple[int, int, int, int]:
        """(size, in use, idle, overflow): two fixed connections serve requests; the writer counts
        as in use while a transaction is open."""
        busy = 1 if self._in_transaction else 0
        return (2, busy, 2 - busy, 0)

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
            self._abort(waiting, self._unavailable(exc))
            return
        self._in_transaction = False
        self._turn.release()
        if self.availability.down_since is not None:
            self.availability.answered()
        for done in waiting:
            if not done.done():
                done.set_result(None)

    def _unavailable(self, exc: BaseException) -> BaseException:
        """``DatabaseUnavailable`` (the outage recorded) for an error that says SQLite cannot write
        now (a full disk, an I/O error, a lock held too long), else ``exc`` itself."""
        if isinstance(exc, DatabaseUnavailable):
            return exc
        reason = sqlite_reason(exc)
        if reason is None:
            return exc
        unavailable = self.availability.failed(reason)
        unavailable.__cause__ = exc
        return unavailable

    def _abort(self, waiting: list[asyncio.Future[None]], exc: BaseException) -> None:
        """The open transaction is lost (its COMMIT failed, or SQLite rolled it back by itself after
        an error): roll back what is left, and fail every block that waits for its COMMIT, since
        what they wrote is gone."""
        try:
            self._end("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled it back
        for done in waiting:
            if not done.done():
                done.set_exception(exc)

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

    def __init__(self, db: LoopSQLite) -> None:
        self._db = db

    async def __aenter__(self) -> LoopConnection:
        db = self._db
        lock = self._lock = db._bind()
        await lock.acquire()
        try:
            if not db._in_transaction:
                await db._begin()
            db._writer_raw.execute("SAVEPOINT grantd_write")
        except BaseException as exc:
            db._schedule_commit()
            db._unlock(lock)
            raise db._unavailable(exc) from exc
        return db.writer

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        db = self._db
        raw = db._writer_raw
        done: asyncio.Future[None] | None = None
        unavailable: BaseException | None = None
        try:
            if exc_type is None:
                raw.execute("RELEASE grantd_write")
                done = db._loop.create_future()  # type: ignore[union-attr]
                db._waiting.append(done)
            else:
                if exc is not None and sqlite_reason(exc) is not None:
                    unavailable = db._unavailable(exc)
                if db._in_transaction and not raw.in_transaction:
                    # SQLite rolled the whole transaction back by itself (as it may on a full disk
                    # or an I/O error): the blocks waiting for its COMMIT lost their writes too.
                    waiting, db._waiting = db._waiting, []
                    db._abort(waiting, unavailable or db.availability.failed("io_error"))
                else:
                    raw.execute("ROLLBACK TO grantd_write")
                    raw.execute("RELEASE grantd_write")
        except sqlite3.Error as error:
            # Not even the savepoint could be rolled back: give up the whole transaction.
            waiting, db._waiting = db._waiting, []
            unavailable = unavailable or db._unavailable(error)
            db._abort(waiting, unavailable)
            if not isinstance(unavailable, DatabaseUnavailable):
                raise
        finally:
            # Unlocked first: the blocks it wakes are then ahead of the COMMIT in the loop's queue.
            db._unlock(self._lock)
            db._schedule_commit()
        if done is not None:
            await done
        if unavailable is not None and unavailable is not exc:
            raise unavailable from exc
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
    # The writer never waits inside SQLite (see LoopSQLite._begin). A WAL reader waits only in
    # rare moments (another connection recovering the WAL): briefly, on the loop.
    raw.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")

    # SQLAlchemy runs on this very connection; it never commits (we do), and its own
    # "begin" for pysqlite issues nothing.
    engine = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool, hide_parameters=True)
    return raw, engine, engine.connect()


def configure_engine(engine: AsyncEngine) -> None:
    """SQLAlchemy's async engine on an SQLite file (Alembic, tests) with the same pragmas, and
    ``BEGIN IMMEDIATE`` for its transactions."""

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
