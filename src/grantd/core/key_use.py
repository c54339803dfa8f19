"""When each app key last obtained an access token (``app_keys.last_used_at``), kept without a
write on the token endpoint's hot path.

Issuing an access token writes no row (``core.access_token``), so a key's last use is kept in the
process's memory (``KeyUse.used``, called for every token issued) and flushed to the database now
and then: every ``FLUSH_INTERVAL`` seconds by each server (``keep_flushed``) and when it shuts
down. What the database shows is thus at most one flush interval behind (a process killed
without a shutdown loses at most its last interval); ``store.key_use.flush`` only ever moves a
key's ``last_used_at`` forward, so processes flushing in any order agree on the latest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from grantd.store import key_use as store
from grantd.store.availability import DatabaseUnavailable

if TYPE_CHECKING:
    from grantd.store.db import Database

FLUSH_INTERVAL = 30  # seconds

log = logging.getLogger("grantd")


class KeyUse:
    """The newest use of each key this process has seen and not yet flushed."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}

    def used(self, key_id: str | None, at: int) -> None:
        """Record that ``key_id`` obtained a token at ``at`` (a client without keys: nothing)."""
        if key_id is not None and self._pending.get(key_id, 0) < at:
            self._pending[key_id] = at

    def pending(self, key_id: str) -> int | None:
        """The newest use of ``key_id`` not yet flushed, if any."""
        return self._pending.get(key_id)

    async def flush(self, db: Database) -> None:
        """Write what is pending (in one transaction); on failure it stays pending for the next turn."""
        if not self._pending:
            return
        taken, self._pending = self._pending, {}
        try:
            async with db.write() as tx:
                await store.flush(tx, taken)
        except BaseException:
            for key_id, at in taken.items():
                self.used(key_id, at)
            raise


async def keep_flushed(key_use: KeyUse, db: Database) -> None:
    """A server's task: flush the keys' last use every ``FLUSH_INTERVAL`` seconds, and once more
    when it is cancelled (the server shutting down)."""
    try:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await key_use.flush(db)
            except DatabaseUnavailable:
                pass  # logged once by the store; the next turn tries again
            except Exception:  # noqa: BLE001 - keep serving; the next turn tries again
                log.exception("recording the keys' last use failed")
    finally:
        try:
            await key_use.flush(db)
        except Exception:  # noqa: BLE001 - shutting down: nothing more to do
            log.exception("recording the keys' last use at shutdown failed")
