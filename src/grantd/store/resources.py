"""The statements of the registered resources (RFC 8707): ``core.resources`` holds the rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from grantd.store.db import fetch_one
from grantd.store.prepared import Prepared
from grantd.store.schema import resources

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

_BY_URI = Prepared(select(resources).where(resources.c.uri == bindparam("uri")))


async def by_uri(conn: AsyncConnection, uri: str) -> Row | None:
    return await fetch_one(conn, _BY_URI, uri=uri)


async def all_resources(conn: AsyncConnection) -> Sequence[Row]:
    return (await conn.execute(select(resources).order_by(resources.c.uri))).all()


async def insert_resource(conn: AsyncConnection, *, uri: str, permissions: str, description: str, now: int) -> bool:
    """Whether it was inserted (False: that URI is registered already)."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(resources).values(uri=uri, permissions=permissions, description=description, created_at=now)
            )
    except IntegrityError:
        return False
    return True


async def delete_resource(conn: AsyncConnection, uri: str) -> bool:
    return (await conn.execute(delete(resources).where(resources.c.uri == uri))).rowcount == 1
