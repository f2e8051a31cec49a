"""The event feed of a publishing service: every event it published, in order.

The outbox keeps each row after sending it, so it doubles as the service's ordered log;
consumers replay it to rebuild their read models. It holds only the events the broker has
(sent rows): a read model rebuilt from an event still in the outbox would run ahead of the
other consumers (a service could act on an aggregate the others have not heard of). A key's
sent rows are a prefix of its history (the relay stops a key at its first failure), so
the feed keeps each aggregate's order; the rows it leaves out reach the rebuilt consumer
through the broker, once sent.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from eventkit.deps import Kit, require_admin
from eventkit.inputs import DEFAULT_LIMIT, Limit, PositionAfter
from eventkit.outbox import OutboxMessage

# An admin call: the feed holds what the events hold (names, emails, invoices).
router = APIRouter(tags=["events"], dependencies=[Depends(require_admin)])


@router.get("/events")
async def event_feed(
    kit: Kit, after: PositionAfter = 0, limit: Limit = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    async with kit.db.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.position > after, OutboxMessage.sent_at.is_not(None))
            .order_by(OutboxMessage.position)
            .limit(limit)
        )
        return [
            {"position": row.position, "stream": row.stream, "event": json.loads(row.body)}
            for row in rows
        ]
