"""The event feed of a publishing service: every event it published, in order.

The outbox keeps each row after sending it, so it doubles as the service's ordered log;
consumers replay it to rebuild their read models.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from eventkit.deps import Kit
from eventkit.outbox import OutboxMessage

router = APIRouter(tags=["events"])


@router.get("/events")
async def event_feed(
    kit: Kit,
    after: Annotated[int, Query(ge=0, description="Return events after this position")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    async with kit.db.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.position > after)
            .order_by(OutboxMessage.position)
            .limit(limit)
        )
        return [
            {"position": row.position, "stream": row.stream, "event": json.loads(row.body)}
            for row in rows
        ]
