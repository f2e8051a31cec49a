"""Transactional outbox: events are written with the state change, and a relay publishes them.

An HTTP write therefore succeeds while the broker is down; the relay catches up when
it returns. Delivery is at-least-once, so consumers deduplicate by event id (inbox.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Integer, String, Text, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import tracing
from eventkit.db import Base, Database, Leadership, table_of
from eventkit.envelope import Envelope
from eventkit.metrics import (
    EVENTS_PUBLISHED,
    EVENTS_RESENT,
    OUTBOX_LAG_SECONDS,
    OUTBOX_PENDING,
    RELAY_LEADER,
)
from eventkit.poller import Poller
from eventkit.settings import default
from eventkit.transports import Outgoing, Transport

log = logging.getLogger(__name__)


class OutboxMessage(Base):
    __tablename__ = "outbox"

    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    stream: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    # Trace context of the change that wrote the event (W3C traceparent headers, JSON).
    headers: Mapped[str | None] = mapped_column(Text)


def add_to_outbox(session: AsyncSession, stream: str, event: Envelope) -> None:
    """Stage `event` for `stream` in the caller's transaction; it is published after the commit.

    Its aggregate id is the partition key, so one aggregate's events stay in order. The
    envelope is encoded to JSON here, once: the relay sends these very bytes.
    """
    session.add(OutboxMessage(**_outbox_rows(stream, [event])[0]))


async def insert_into_outbox(
    session: AsyncSession, stream: str, events: Sequence[Envelope]
) -> None:
    """What `add_to_outbox` does for each of `events`, in one statement run now, outside
    the ORM's unit of work: for a write run on every request, where the ORM's flush costs
    more than the statement. Rows take their outbox positions (the publishing order)
    when inserted, so a transaction uses this or `add_to_outbox`."""
    if events:
        await session.execute(_STAGE, _outbox_rows(stream, events))


def _outbox_rows(stream: str, events: Sequence[Envelope]) -> list[dict[str, Any]]:
    trace_headers = tracing.inject()
    headers = json.dumps(trace_headers) if trace_headers else None
    now = datetime.now(UTC)
    return [
        {
            "event_id": str(event.id),
            "stream": stream,
            "key": event.key,
            "event_type": event.type,
            "body": event.model_dump_json(),
            "created_at": now,
            "headers": headers,
        }
        for event in events
    ]


# The outbox's statements on a hot path, built once, on the table (no ORM layer).
_OUTBOX = table_of(OutboxMessage)
_STAGE = insert(_OUTBOX)
_PENDING = (
    select(
        _OUTBOX.c.position,
        _OUTBOX.c.stream,
        _OUTBOX.c.key,
        _OUTBOX.c.event_type,
        _OUTBOX.c.body,
        _OUTBOX.c.headers,
    )
    .where(_OUTBOX.c.sent_at.is_(None))
    .order_by(_OUTBOX.c.position)
    .limit(bindparam("limit"))
)
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.position.in_(bindparam("positions", expanding=True)))
    .values(sent_at=bindparam("at"))
)
# The gauges' statement, once a poll interval.
_WAITING = select(func.count(_OUTBOX.c.position), func.min(_OUTBOX.c.created_at)).where(
    _OUTBOX.c.sent_at.is_(None)
)


class OutboxRelay:
    """Publishes pending outbox rows in commit order and marks them sent.

    A batch of rows goes out at once, many in flight (see `publish_pending`). With
    replicas on PostgreSQL only the leader publishes (an advisory lock, see
    db.Leadership), so each row is published by one relay and in order per key.
    """

    def __init__(
        self,
        db: Database,
        transport: Transport,
        poll_seconds: float = default("OUTBOX_POLL_SECONDS"),
        publish_timeout: float = 10.0,
        batch_size: int = default("RELAY_BATCH_SIZE"),
    ) -> None:
        self.db = db
        self.transport = transport
        self.poll_seconds = poll_seconds
        self.publish_timeout = publish_timeout
        self.batch_size = batch_size
        self.leadership = Leadership(db, "eventkit-outbox-relay")
        self.poller = Poller("outbox-relay", self.run_once, poll_seconds, between=self._gauges)
        self._measured_at = 0.0

    def wake(self) -> None:
        """Called after a commit that added events, so they leave without waiting for a poll."""
        self.poller.wake()

    def start(self) -> None:
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()
        await self.leadership.release()

    async def run_once(self) -> None:
        """One round: if this process leads, publish until the outbox is empty.

        The poller runs it after each wake or poll; the pipeline simulation
        (tests/simulation) calls it step by step.
        """
        # A full batch may have more behind it; a short one emptied the outbox. The lead is
        # asked again before each batch: once lost, another replica may hold it, and
        # publishing on would send its rows twice and out of order.
        while not self.poller.stopping:
            leads = await self.leadership.held()
            RELAY_LEADER.set(1 if leads else 0)
            if not leads or await self.publish_pending() < self.batch_size:
                break

    async def _gauges(self) -> None:
        """The gauges cost a query: once a poll interval is enough."""
        if time.monotonic() - self._measured_at >= self.poll_seconds:
            self._measured_at = time.monotonic()
            await self.measure()

    async def resend_since(self, since: datetime) -> int:
        """Mark events sent since `since` as pending again; returns how many."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.sent_at >= since)
                .values(sent_at=None)
                .execution_options(synchronize_session=False)
            )
        self.wake()
        resent = int(result.rowcount or 0)  # type: ignore[attr-defined]
        EVENTS_RESENT.inc(resent)
        return resent

    async def measure(self) -> None:
        """Update the outbox gauges: how many events wait, and for how long the oldest has."""
        async with self.db.sessions() as session:
            pending, oldest = (await session.execute(_WAITING)).one()
        OUTBOX_PENDING.set(pending)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        OUTBOX_LAG_SECONDS.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    async def publish_pending(self, batch: int | None = None) -> int:
        """Publish the oldest pending rows (up to `batch`) at once; returns how many were sent.

        The rows go to the transport in commit order, which hands one key's rows to the
        broker in that order, many in flight (transports' `publish_batch`). Then one UPDATE
        marks sent what the broker confirmed, and of each key only the rows before its
        first failure: a key's pending rows are always the rest of its history, so a retry
        sends them in order. A failure is raised after that; the rows it left wait for the
        next round.
        """
        async with self.db.sessions() as session:
            limit = {"limit": batch or self.batch_size}
            rows = (await session.execute(_PENDING, limit)).all()
        if not rows:
            return 0
        spans: list[trace.Span] = []
        messages: list[Outgoing] = []
        for row in rows:
            # The publish span continues the trace of the change that wrote the event, and
            # travels in the message's headers to every consumer.
            span = tracing.tracer.start_span(
                f"publish {row.stream}",
                context=tracing.extract(json.loads(row.headers)) if row.headers else None,
                kind=SpanKind.PRODUCER,
                attributes={"messaging.destination.name": row.stream, "event.type": row.event_type},
            )
            spans.append(span)
            messages.append(
                Outgoing(
                    stream=row.stream,
                    body=row.body.encode(),
                    key=row.key,
                    event_type=row.event_type,
                    headers=tracing.inject(trace.set_span_in_context(span)),
                )
            )
        outcomes = await self.transport.publish_batch(messages, timeout=self.publish_timeout)
        confirmed: list[int] = []
        published: Counter[tuple[str, str]] = Counter()
        failed_keys: set[str] = set()
        failure: BaseException | None = None
        for row, span, outcome in zip(rows, spans, outcomes, strict=True):
            if outcome is None and row.key not in failed_keys:
                confirmed.append(row.position)
                published[row.stream, row.event_type] += 1
            else:
                if row.key:  # a keyless row has no order to keep
                    failed_keys.add(row.key)
                if failure is None:
                    failure = outcome
                span.set_status(Status(StatusCode.ERROR, repr(outcome)))
            span.end()
        if confirmed:
            async with self.db.transaction() as session:
                sent = {"positions": confirmed, "at": datetime.now(UTC)}
                await session.execute(_MARK_SENT, sent)
        for (stream, event_type), count in published.items():
            EVENTS_PUBLISHED.labels(stream=stream, type=event_type).inc(count)
        if failure is not None:
            failure.add_note(f"{len(rows) - len(confirmed)} of {len(rows)} events stay pending")
            raise failure
        return len(confirmed)
