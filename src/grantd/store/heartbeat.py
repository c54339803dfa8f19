"""The readiness check's write: one committed upsert of one row (``maintenance``'s task
``heartbeat``, its time the last write's), so that ``/readyz`` proves the database takes writes —
a read, or a write rolled back, succeeds on a full disk or a read-only file too."""

from __future__ import annotations

from typing import Any

from grantd.store.db import upsert
from grantd.store.schema import maintenance

TASK = "heartbeat"


async def beat(conn: Any, now: int) -> None:
    stmt = upsert(conn, maintenance).values(task=TASK, due_at=now)
    await conn.execute(stmt.on_conflict_do_update(index_elements=[maintenance.c.task], set_={"due_at": stmt.excluded.due_at}))
