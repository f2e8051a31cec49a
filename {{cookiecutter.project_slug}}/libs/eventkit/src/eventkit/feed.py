"""The event feed of a publishing service: every event it published, in order.

The outbox keeps each row after sending it, so it doubles as the service's ordered log;
consumers replay it to rebuild their read models. It holds only the events the broker has
(sent rows): a read model rebuilt from an event still in the outbox would run ahead of the
other consumers (a service could act on an aggregate the others have not heard of).

A page ends at the first event the broker does not have yet, and its headers name it
(`Feed-Pending-Position`, `Feed-Pending-Key`); the next page starts after it. A key's sent
rows are a prefix of its history (the relay stops a key at its first failure), so a reader
that leaves out that key's later events keeps each aggregate's order: they reach it through
the broker, in order, once sent. (A reader that went past the row without knowing would
replay the key's later events, sent meanwhile, before it: simulation seed 22000763.)
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from eventkit.deps import Kit, require_admin
from eventkit.inputs import DEFAULT_LIMIT, Limit, PositionAfter
from eventkit.outbox import OutboxMessage

# An admin call: the feed holds what the events hold (names, emails, invoices).
router = APIRouter(tags=["events"], dependencies=[Depends(require_admin)])


PENDING_POSITION_HEADER = "Feed-Pending-Position"
PENDING_KEY_HEADER = "Feed-Pending-Key"


@router.get("/events")
async def event_feed(
    kit: Kit, response: Response, after: PositionAfter = 0, limit: Limit = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    async with kit.db.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.position > after)
            .order_by(OutboxMessage.position)
            .limit(limit)
        )
        page = []
        for row in rows:
            if row.sent_at is None:  # not the broker's yet: the page ends here
                response.headers[PENDING_POSITION_HEADER] = str(row.position)
                response.headers[PENDING_KEY_HEADER] = row.key
                break
            page.append(
                {"position": row.position, "stream": row.stream, "event": json.loads(row.body)}
            )
        return page
