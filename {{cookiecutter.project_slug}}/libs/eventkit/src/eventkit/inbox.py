"""Idempotent inbox: processed event ids, written in the same transaction as the read model.

Beside it, each aggregate's position: the sequence of its last applied event, so that an
aggregate's events apply in order whatever order they arrive in (retries, redeliveries,
replicas).

An aggregate's position opens at the first of its events this consumer sees. That is its
#1, unless the aggregate is older than the consumer (a service added later, whose queue or
topic starts after the aggregate's first events, or a database from before positions were
kept): then the earlier events will never come. But an earlier event may also just be late
(in flight on another replica, or waiting in a retry), and must not be overtaken. So a
position opened at #k > 1 is tentative for a while (`opening`): an earlier event seen
meanwhile moves it back, and #k waits. Once the while is over the position stands at
#k - 1 and #k applies. An event that fails or is dead-lettered is seen too (`see`), so
an aggregate whose #1 is in a retry never opens later than #1.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import String, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import clock
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
    # The last applied event's sequence; while the position is tentative, the one before
    # the earliest event seen.
    sequence: Mapped[int]
    # Set while the position is tentative: opened at an event other than the aggregate's
    # first, it waits until then for earlier ones that may still come.
    opening_until: Mapped[datetime | None]
    # An event of the aggregate is held until then (its type or version is not known here
    # yet): the aggregate's later events wait as long, spending no retries.
    held_until: Mapped[datetime | None]
    # The earliest event held: only events after it wait for the hold, and only until it
    # applies or a deploy knows it. (None in rows from before: any later event waits.)
    held_sequence: Mapped[int | None]


# Read by every batch: built once.
_POSITIONS = select(AggregatePosition).where(
    AggregatePosition.stream == bindparam("stream"),
    AggregatePosition.aggregate_id.in_(bindparam("ids", expanding=True)),
)


class Turn(Enum):
    NEXT = "next"  # its aggregate's next event: apply it
    OLDER = "older"  # already applied: a duplicate
    NOT_YET = "not yet"  # an earlier event of its aggregate is missing: retry later


class Positions:
    """The positions of a batch's aggregates, loaded in one query, advanced as events apply.

    Events without `aggregate_id` and `sequence` (from elsewhere) always take their turn.
    `opening`: how long a position opened at an event other than #1 stays tentative (0:
    it stands at once, as in a rebuild's replay of a publisher's whole feed).
    """

    def __init__(
        self,
        session: AsyncSession,
        stream: str,
        rows: list[AggregatePosition],
        opening: timedelta = timedelta(0),
    ) -> None:
        self.session = session
        self.stream = stream
        self.rows = {row.aggregate_id: row for row in rows}
        self.opening = opening
        self.now = clock.utcnow()

    @classmethod
    async def load(
        cls,
        session: AsyncSession,
        stream: str,
        events: list[Envelope],
        opening: timedelta = timedelta(0),
    ) -> Positions:
        ids = {event.aggregate_id for event in events if event.aggregate_id is not None}
        rows: list[AggregatePosition] = []
        if ids:
            found = await session.execute(_POSITIONS, {"stream": stream, "ids": list(ids)})
            rows = list(found.scalars())
        return cls(session, stream, rows, opening)

    def last(self, aggregate_id: str) -> int:
        row = self.rows.get(aggregate_id)
        return row.sequence if row is not None else 0

    def take_turn(self, event: Envelope) -> Turn:
        """Where `event` stands in its aggregate; NEXT advances the position."""
        if event.aggregate_id is None or event.sequence is None:
            return Turn.NEXT
        row = self.see(event)
        if row.opening_until is not None:
            if event.sequence != row.sequence + 1 or row.opening_until > self.now:
                return Turn.NOT_YET
            row.opening_until = None  # nothing earlier came: the position stands
        if event.sequence <= row.sequence:
            return Turn.OLDER
        if event.sequence > row.sequence + 1:
            return Turn.NOT_YET
        row.sequence = event.sequence
        return Turn.NEXT

    def see(self, event: Envelope) -> AggregatePosition:
        """Note that `event` came (applied or not): a position opens, or moves back, to it."""
        assert event.aggregate_id is not None and event.sequence is not None
        row = self.rows.get(event.aggregate_id)
        if row is None:
            row = AggregatePosition(
                stream=self.stream,
                aggregate_id=event.aggregate_id,
                sequence=event.sequence - 1,
                opening_until=self.now + self.opening if self.opening else None,
                held_until=None,
                held_sequence=None,
            )
            self.session.add(row)
            self.rows[event.aggregate_id] = row
        elif row.opening_until is not None and event.sequence <= row.sequence:
            row.sequence = event.sequence - 1  # an earlier one than any seen: it came late
        if event.sequence == 1:
            row.opening_until = None  # nothing comes before #1
        return row

    def hold(self, event: Envelope, until: datetime) -> None:
        """`event` is held until `until`: its aggregate's later events wait as long."""
        assert event.sequence is not None  # see() asserts it too
        row = self.see(event)
        if row.held_until is None or row.held_until < until:
            row.held_until = until
        earlier = row.held_sequence
        if earlier is None or earlier <= row.sequence or event.sequence < earlier:
            row.held_sequence = event.sequence  # none held yet, the one held applied, or earlier

    def release(self, event: Envelope, grace: timedelta) -> None:
        """`event` was held and a deploy knows it now: the hold lifts (another event still
        unknown holds the aggregate again when it comes back). A hold that stayed put off
        the aggregate's later events for the whole hold, a day, without spending their
        retries, behind an earlier event that was poison.

        It lifts after `grace`, the longest retry delay: the events the hold put off are in
        the broker's retries until then, and an event that waits for one of them meanwhile
        spends no retry (seed 63000294: #3 and #5, put off behind #2's hold just before #2
        applied, came back 300 s later; #4 and #6 waited for them as for failures, and #6
        ran out of retries)."""
        row = self.rows.get(event.key)
        if row is not None and row.held_sequence in (None, event.sequence):
            row.held_sequence = None  # any later event that waits
            if row.held_until is not None:
                row.held_until = min(row.held_until, self.now + grace)

    def _held_until(self, row: AggregatePosition, event: Envelope) -> datetime | None:
        """Until when `event` waits for an earlier event held: none once the hold is over,
        for the held event itself, or once the held one has applied."""
        if row.held_until is None or row.held_until <= self.now:
            return None
        held = row.held_sequence
        if held is not None and not row.sequence < held < (event.sequence or 0):
            return None
        return row.held_until

    def wait_until(self, event: Envelope) -> datetime | None:
        """Until when `event` (NOT_YET) waits without spending a retry: a tentative position,
        or an earlier event held; None when it waits as a failure does."""
        row = self.rows.get(event.key)
        if row is None:
            return None
        held = self._held_until(row, event)
        waits = [t for t in (row.opening_until, held) if t is not None and t > self.now]
        return max(waits, default=None)

    def waiting_for(self, event: Envelope) -> str:
        """Why `event` waits, for the logs and the dead letters."""
        missing = self.last(event.key) + 1
        why = f"{event.type} #{event.sequence} of {event.aggregate_id} waits for #{missing}"
        row = self.rows.get(event.key)
        if row is not None and row.opening_until is not None and row.opening_until > self.now:
            return f"{why} (it came first; earlier ones may come until {row.opening_until:%X})"
        if row is not None and self._held_until(row, event) is not None:
            return f"{why} (held: a type or version this service does not know yet)"
        return why
