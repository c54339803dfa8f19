"""The browsers a person signed in from (``known_devices``, grantd.core.notices)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from grantd.store.schema import known_devices

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def remember(conn: AsyncConnection, user_id: str, device_hash: str, now: int) -> bool:
    """Record a sign-in of ``user_id`` from the device ``device_hash``: True when the device is new to them."""
    seen = await conn.execute(
        update(known_devices)
        .where(known_devices.c.user_id == user_id, known_devices.c.device_hash == device_hash)
        .values(last_seen_at=now)
    )
    if seen.rowcount == 1:
        return False
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(known_devices).values(user_id=user_id, device_hash=device_hash, first_seen_at=now, last_seen_at=now)
            )
    except IntegrityError:  # the same browser's other sign-in, at the same moment
        return False
    return True
