"""The audit log as a signed-in user sees it: events about them and about the apps they own."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import context, current_user
from grantd.api.envelope import envelope
from grantd.api.wire import NO_NUL, rfc3339
from grantd.core import audit
from grantd.core.accounts import Principal
from grantd.core.context import Context
from grantd.core.errors import InvalidRequest


class AuditEventData(BaseModel):
    id: int
    occurred_at: str
    event: str = Field(examples=["login_succeeded"])
    user_id: str | None
    app_id: str | None
    actor: str = Field(description='Who acted: a user id, an app id, "operator" or "anonymous".')
    address: str | None = Field(description="The client address the request came from, when known.")
    detail: dict[str, Any] = Field(description="Ids and permissions; never a secret.")


class AuditEventList(BaseModel):
    events: list[AuditEventData]


def parse_rfc3339(value: str, field: str = "since") -> int:
    """Unix seconds of an RFC 3339 date-time with a time zone (``2024-07-09T22:02:52Z``)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be an RFC 3339 date-time, such as 2024-07-09T22:02:52Z.") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{field} must carry a time zone, such as Z or +02:00.")
    return int(moment.timestamp())


def event_data(event: audit.AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": rfc3339(event.occurred_at),
        "event": event.event,
        "user_id": event.user_id,
        "app_id": event.app_id,
        "actor": event.actor,
        "address": event.address,
        "detail": event.detail,
    }


async def list_events(
    user: Annotated[Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
    since: Annotated[
        str | None, Query(max_length=64, description="Only events at or after this RFC 3339 date-time."), NO_NUL
    ] = None,
    limit: Annotated[int, Query(ge=1, le=audit.LIMIT_MAX, description="At most this many events.")] = audit.LIMIT_DEFAULT,
) -> Response:
    events = await audit.events_for_user(
        ctx, user.user_id, since=parse_rfc3339(since) if since is not None else None, limit=limit
    )
    return envelope({"events": [event_data(event) for event in events]})
