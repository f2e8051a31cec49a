"""Idempotent inbox: processed event ids, written in the same transaction as the read model.

Beside it, each aggregate's position: the sequence of its last applied event, so that an
aggregate's events apply in order whatever order they arrive in (competing consumers,
redeliveries).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import String, select
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


class Turn(Enum):
    NEXT = "next"  # its aggregate's next event: apply it
    OLDER = "older"  # already applied: a duplicate
    NOT_YET = "not yet"  # an earlier event of its aggregate is missing: retry later


class Positions:
    """The positions of a batch's aggregates, loaded in one query, advanced as events apply.

    Events without `aggregate_id` and `sequence` (from elsewhere) always take their turn.
    """

    def __init__(self, session: AsyncSession, stream: str, rows: list[AggregatePosition]) -> None:
        self.session = session
        self.stream = stream
        self.rows = {row.aggregate_id: row for row in rows}

    @classmethod
    async def load(cls, session: AsyncSession, stream: str, events: list[Envelope]) -> Positions:
        ids = {event.aggregate_id for event in events if event.aggregate_id is not None}
        rows: list[AggregatePosition] = []
        if ids:
            query = select(AggregatePosition).where(
                AggregatePosition.stream == stream, AggregatePosition.aggregate_id.in_(ids)
            )
            rows = list((await session.execute(query)).scalars())
        return cls(session, stream, rows)

    def last(self, aggregate_id: str) -> int:
        row = self.rows.get(aggregate_id)
        return row.sequence if row is not None else 0

    def take_turn(self, event: Envelope) -> Turn:
        """Where `event` stands in its aggregate; NEXT advances the position."""
        if event.aggregate_id is None or event.sequence is None:
            return Turn.NEXT
        last = self.last(event.aggregate_id)
        if event.sequence <= last:
            return Turn.OLDER
        if event.sequence > last + 1:
            return Turn.NOT_YET
        row = self.rows.get(event.aggregate_id)
        if row is None:
            row = AggregatePosition(stream=self.stream, aggregate_id=event.aggregate_id, sequence=0)
            self.session.add(row)
            self.rows[event.aggregate_id] = row
        row.sequence = event.sequence
        return Turn.NEXT

    def waiting_for(self, event: Envelope) -> str:
        """Why `event` waits, for the logs and the dead letters."""
        missing = self.last(event.aggregate_id or "") + 1
        return f"{event.type} #{event.sequence} of {event.aggregate_id} waits for #{missing}"
