"""Transactional outbox: events are written with the state change, and a relay publishes them.

An HTTP write therefore succeeds while the broker is down; the relay catches up when
it returns. Delivery is at-least-once, so consumers deduplicate by event id (inbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from opentelemetry.trace import SpanKind
from sqlalchemy import Integer, String, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import tracing
from eventkit.db import Base, Database, Leadership
from eventkit.envelope import Envelope
from eventkit.metrics import EVENTS_PUBLISHED, OUTBOX_LAG_SECONDS, OUTBOX_PENDING, RELAY_LEADER
from eventkit.transports import Transport

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

    Its aggregate id is the partition key, so one aggregate's events stay in order.
    """
    session.add(
        OutboxMessage(
            event_id=str(event.id),
            stream=stream,
            key=event.aggregate_id or "",
            event_type=event.type,
            body=event.model_dump_json(),
            created_at=datetime.now(UTC),
            headers=json.dumps(tracing.inject()),
        )
    )


class OutboxRelay:
    """Publishes pending outbox rows in commit order and marks them sent.

    With replicas on PostgreSQL only the leader publishes (an advisory lock, see
    db.Leadership), so each row is published by one relay and in order per key.
    """

    def __init__(
        self,
        db: Database,
        transport: Transport,
        poll_seconds: float = 1.0,
        publish_timeout: float = 10.0,
    ) -> None:
        self.db = db
        self.transport = transport
        self.poll_seconds = poll_seconds
        self.publish_timeout = publish_timeout
        self.leadership = Leadership(db, "eventkit-outbox-relay")
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called after a commit that added events, so they leave without waiting for a poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Let the current batch finish, then end; cancelling mid-wait is racy on Python 3.11."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.leadership.release()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                leads = await self.leadership.held()
                RELAY_LEADER.set(1 if leads else 0)
                while leads and not self._stopping and await self.publish_pending():
                    pass
            except Exception:  # broker or database down: keep the rows, try again later
                log.warning("outbox relay could not publish; retrying", exc_info=True)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise
                # A send cancelled under us (the client reconnecting): keep going.
                log.warning("outbox relay: a send was cancelled; retrying")
            with contextlib.suppress(Exception):
                await self.measure()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

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
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def measure(self) -> None:
        """Update the outbox gauges: how many events wait, and for how long the oldest has."""
        async with self.db.sessions() as session:
            pending, oldest = (
                await session.execute(
                    select(
                        func.count(OutboxMessage.position), func.min(OutboxMessage.created_at)
                    ).where(OutboxMessage.sent_at.is_(None))
                )
            ).one()
        OUTBOX_PENDING.set(pending)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        OUTBOX_LAG_SECONDS.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    async def publish_pending(self, batch: int = 200) -> int:
        """Publish one batch; returns how many rows were sent."""
        async with self.db.transaction() as session:
            rows = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                    .order_by(OutboxMessage.position)
                    .limit(batch)
                )
            ).all()
        sent = 0
        for row in rows:
            # Bounded: a send caught in an outage must not hold the relay forever.
            parent = json.loads(row.headers) if row.headers else {}
            attributes = {"messaging.destination.name": row.stream, "event.type": row.event_type}
            with tracing.span(f"publish {row.stream}", SpanKind.PRODUCER, parent, attributes):
                async with asyncio.timeout(self.publish_timeout):
                    await self.transport.publish(
                        row.stream,
                        row.body.encode(),
                        key=row.key,
                        event_type=row.event_type,
                        headers=tracing.inject(),
                    )
            async with self.db.transaction() as session:
                stored = await session.get(OutboxMessage, row.position)
                if stored is not None:
                    stored.sent_at = datetime.now(UTC)
            EVENTS_PUBLISHED.labels(stream=row.stream, type=row.event_type).inc()
            sent += 1
        return sent
