"""The write of ``core.key_use``: keys' ``last_used_at`` moved forward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, bindparam, update

from grantd.store.db import later_of
from grantd.store.schema import app_keys

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

_USED = (
    update(app_keys)
    .where(app_keys.c.id == bindparam("of_key"))
    .values(last_used_at=later_of(bindparam("at", type_=BigInteger), app_keys.c.last_used_at))
)


async def flush(conn: AsyncConnection, used: dict[str, int]) -> None:
    """Each key's ``last_used_at`` becomes the later of what it was and ``used[key]``; keys in id
    order (the same lock order for every process)."""
    for key_id in sorted(used):
        await conn.execute(_USED, {"of_key": key_id, "at": used[key_id]})
