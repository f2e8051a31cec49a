"""Idempotent inbox: processed event ids, written in the same transaction as the read model.

Beside it, each aggregate's position: the sequence of its last applied event, so that an
aggregate's events apply in order whatever order they arrive in (competing consumers,
redeliveries).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base
from eventkit.envelope import Envelope


class ProcessedEvent(Base):
    __tablename__ = "inbox"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    stream: Mapped[str] = mapped_column(String(200))
    processed_at: Mapped[datetime] = mapped_column(index=True)


class AggregatePosition(Base):
    __tablename__ = "aggregate_positions"

    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    sequence: Mapped[int]


class NotYetDue(Exception):
    """An event arrived before an earlier one of its aggregate; it is retried later."""


async def take_turn(session: AsyncSession, stream: str, event: Envelope) -> bool:
    """True if `event` is its aggregate's next; False if older (already applied).

    Raises NotYetDue if an earlier event of the aggregate has not been applied yet. Events
    without `aggregate_id` and `sequence` (from elsewhere) always take their turn.
    """
    if event.aggregate_id is None or event.sequence is None:
        return True
    position = await session.get(AggregatePosition, (stream, event.aggregate_id))
    last = position.sequence if position is not None else 0
    if event.sequence <= last:
        return False
    if event.sequence > last + 1:
        raise NotYetDue(
            f"{event.type} #{event.sequence} of {event.aggregate_id} waits for #{last + 1}"
        )
    if position is None:
        session.add(AggregatePosition(stream=stream, aggregate_id=event.aggregate_id, sequence=1))
    else:
        position.sequence = event.sequence
    return True
