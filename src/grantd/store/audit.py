"""The audit log's statements: one INSERT per event, and the two views (a user's, the operator's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Sequence

from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.engine import Row

from grantd.store.db import run
from grantd.store.prepared import Prepared
from grantd.store.schema import apps, audit_events

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


_INSERT = Prepared(
    insert(audit_events).values(
        {name: bindparam(name) for name in ("occurred_at", "event", "actor", "user_id", "app_id", "address", "detail")}
    )
)


async def insert_event(
    conn: AsyncConnection,
    *,
    occurred_at: int,
    event: str,
    actor: str,
    user_id: str | None,
    app_id: str | None,
    address: str | None,
    detail: str,
) -> None:
    await run(
        conn,
        _INSERT,
        occurred_at=occurred_at,
        event=event,
        actor=actor,
        user_id=user_id,
        app_id=app_id,
        address=address,
        detail=detail,
    )


def _newest_first(query, since: int | None, limit: int | None):  # type: ignore[no-untyped-def]
    if since is not None:
        query = query.where(audit_events.c.occurred_at >= since)
    return query.order_by(audit_events.c.occurred_at.desc(), audit_events.c.id.desc()).limit(limit)


async def about_user(conn: AsyncConnection, user_id: str, since: int | None, limit: int | None) -> Sequence[Row]:
    """Events about the user, and about the apps the user owns; newest first. Each row says whether
    its app is one of the user's (``app_owned``)."""
    owned = select(apps.c.id).where(apps.c.owner_id == user_id).scalar_subquery()
    app_owned = audit_events.c.app_id.in_(owned)
    query = select(audit_events, app_owned.label("app_owned")).where(or_(audit_events.c.user_id == user_id, app_owned))
    return (await conn.execute(_newest_first(query, since, limit))).all()


async def every(conn: AsyncConnection, since: int | None, limit: int | None) -> Sequence[Row]:
    """Every event (the operator's view); newest first."""
    query = select(audit_events)
    if since is not None:
        query = query.where(audit_events.c.occurred_at >= since)
    query = query.order_by(audit_events.c.occurred_at.desc(), audit_events.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return (await conn.execute(query)).all()
