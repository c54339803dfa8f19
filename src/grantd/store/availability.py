"""Whether the database can serve requests now, and the one error that says it cannot.

Every way the database can fail to answer — connection refused, a connect, pool or statement
timeout, a connection lost in the middle of a block, a full disk, a busy SQLite file — reaches
the code above the store as one exception, ``DatabaseUnavailable``. The API layer answers it once,
in each dialect's shape, with 503, ``Retry-After`` and ``temporarily_unavailable``
(``grantd.api.errors.unavailable``); nothing logs a traceback for it.

``Availability`` (one per ``Database``) keeps the outage's state: the first failure logs one
warning and sets the ``grantd_database_available`` gauge to 0; the first block that succeeds
afterwards logs one info line with how long it lasted and sets it back to 1. In between, on
PostgreSQL, once a connection was refused or an answer did not come in time, blocks do not wait
for a database known not to answer: one block a ``PROBE_INTERVAL`` is let through to try (bounded
by ``GRANTD_DATABASE_TIMEOUT``), the others get ``DatabaseUnavailable`` at once (``admit``). So a
stopped or frozen database costs a client a quick 503 rather than a wait, and recovery is noticed
within a second of the database answering. (A lost connection alone does not stop the others
trying: after a restart the next block simply connects again.)

A block that waits too long for a free pooled connection (every one busy) is answered 503 as
well, but that is load, not an outage: it is counted (reason ``pool_exhausted``), not logged.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from grantd import metrics

log = logging.getLogger("grantd.database")

# Seconds a client is told to wait before it retries (Retry-After).
RETRY_AFTER = 5
# While the database is down, one block per this many seconds tries it; the others fail at once.
PROBE_INTERVAL = 1.0

# The failures that make the other blocks stop trying for a while (see ``admit``).
_UNREACHABLE = frozenset({"refused", "timeout", "starting_or_stopping", "unreachable"})

# SQLite's primary result codes that mean "cannot write (or read) now", not a bad statement.
_SQLITE_UNAVAILABLE = {
    5: "busy",  # SQLITE_BUSY: another program held the write lock past the busy timeout
    6: "locked",  # SQLITE_LOCKED
    7: "out_of_memory",  # SQLITE_NOMEM
    8: "read_only",  # SQLITE_READONLY: the file or its folder cannot be written
    10: "io_error",  # SQLITE_IOERR
    13: "disk_full",  # SQLITE_FULL
    14: "cannot_open",  # SQLITE_CANTOPEN
}


class DatabaseUnavailable(Exception):
    """The database cannot serve this block now; ``reason`` is a word for why (``refused``,
    ``timeout``, ``connection_lost``, ``disk_full``, …), never internals."""

    retry_after = RETRY_AFTER

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database is unavailable ({reason})")
        self.reason = reason


def sqlite_reason(exc: BaseException) -> str | None:
    """The word for an SQLite error that means the database is unavailable, else None. Reads
    through SQLAlchemy's wrapper (``.orig``)."""
    error = getattr(exc, "orig", exc)
    if not isinstance(error, sqlite3.Error):
        return None
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return _SQLITE_UNAVAILABLE.get(code & 0xFF)
    text = str(error)  # an error raised by grantd itself in SQLite's words ("database is locked: …")
    return "busy" if "locked" in text or "busy" in text else None


class Availability:
    """One database's outage state: when it went down (None while it answers), the log lines that
    open and close an outage, and the gauge."""

    __slots__ = ("down_since", "gated", "reason", "_next_probe", "_label")

    def __init__(self, label: str) -> None:
        self.down_since: float | None = None
        self.gated = False  # whether blocks are refused at once (see admit)
        self.reason = ""
        self._next_probe = 0.0
        self._label = label  # "postgresql" or "sqlite": the gauge's label
        _gauge(label, 1)

    def failed(self, reason: str) -> DatabaseUnavailable:
        """Record a failure (logging the outage's start if it is the first); the exception to raise."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.reason = reason
            log.warning(
                "the database is unavailable (%s): answering 503 with Retry-After until it answers again", reason,
                extra={"database": self._label, "reason": reason},
            )
            _gauge(self._label, 0)
        if reason in _UNREACHABLE:
            self.gated = True
            self._next_probe = now + PROBE_INTERVAL
        _failures(reason)
        return DatabaseUnavailable(reason)

    @staticmethod
    def busy(reason: str) -> DatabaseUnavailable:
        """A 503 that is load, not an outage (no free connection in time): counted, not logged."""
        _failures(reason)
        return DatabaseUnavailable(reason)

    def answered(self) -> None:
        """A block succeeded: if the database was down, the outage is over."""
        since = self.down_since
        if since is not None:
            self.down_since = None
            self.gated = False
            lasted = time.monotonic() - since
            log.info(
                "the database answers again after %.1f s (%s)", lasted, self.reason,
                extra={"database": self._label, "outage_seconds": round(lasted, 1)},
            )
            _gauge(self._label, 1)

    def admit(self) -> None:
        """While the database is down: let one block a ``PROBE_INTERVAL`` through to try it, and
        refuse the others at once."""
        if not self.gated:
            return
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_INTERVAL
            return
        _failures(self.reason)
        raise DatabaseUnavailable(self.reason)


def _gauge(label: str, value: int) -> None:
    metrics.database_available.labels(label).set(value)


def _failures(reason: str) -> None:
    metrics.database_unavailable.labels(reason).inc()
