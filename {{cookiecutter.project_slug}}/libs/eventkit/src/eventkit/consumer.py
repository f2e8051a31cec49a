"""The consumer: the path every received message takes into a service's database.

Messages arrive in batches. Bad messages (not JSON, not an envelope, unknown type) go
straight to the dead letters. The rest are applied in one transaction: one inbox query
for the whole batch, each aggregate's events in sequence order, the inbox rows written
beside the read models. If that transaction fails, each event is tried alone, so one bad
event cannot hold back the others. An event that fails alone, or whose aggregate's
earlier event has not been applied yet, goes to a delayed retry through the broker (the
stream goes on meanwhile); after `max_retries` it goes to the dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opentelemetry.trace import SpanKind
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import context, tracing
from eventkit.db import Database
from eventkit.dead_letters import DeadLetter
from eventkit.envelope import Envelope
from eventkit.inbox import Positions, ProcessedEvent, Turn
from eventkit.metrics import (
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_RETRIED,
    EVENTS_WAITING,
    HANDLER_SECONDS,
)
from eventkit.pause import Paused, check_running
from eventkit.registry import EventRegistry, InvalidEvent
from eventkit.subscriptions import Handler, Subscriptions
from eventkit.transports import BatchHandler, Delivery, Transport

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-attempts"
# How long a batch waits for a rebuild to end before it is handed back to the broker
# (well under Kafka's max.poll.interval).
PAUSE_WAIT_SECONDS = 30.0


class Gate:
    """Lets batches run side by side until closed; closing waits for those in flight.

    A rebuild closes the live consumer's gate so no live event lands mid-rebuild.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0

    @asynccontextmanager
    async def passage(self) -> AsyncIterator[None]:
        await self._open.wait()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


@dataclass
class Incoming:
    """One decoded event of a batch, with what it arrived as."""

    event: Envelope
    raw: bytes
    headers: Mapping[str, str]
    handlers: list[Handler]

    @property
    def attempts(self) -> int:
        """Failed attempts before this delivery (a retry carries the count)."""
        value = self.headers.get(ATTEMPTS_HEADER, "0")
        return int(value) if value.isdigit() else 0


@dataclass
class Outcome:
    applied: list[Incoming] = field(default_factory=list)
    duplicates: int = 0
    # Their aggregate's earlier event is not applied yet: retried later.
    not_due: list[tuple[Incoming, str]] = field(default_factory=list)


class Consumer:
    """Applies the messages of one service's streams to its database."""

    def __init__(
        self,
        service: str,
        subscriptions: Subscriptions,
        events: EventRegistry,
        db: Database,
        transport: Transport,
        *,
        replay: bool = False,
    ) -> None:
        self.service = service
        self.subscriptions = subscriptions
        self.events = events
        self.db = db
        self.transport = transport
        # A rebuild's replay: it runs while live consumption is paused, and what fails
        # goes to the dead letters at once.
        self.replay = replay
        self.gate = Gate()

    def attach(self) -> None:
        for stream in self.subscriptions.streams:
            self.transport.subscribe(
                stream,
                self._batch_handler(stream),
                types=self.subscriptions.types(stream),
                description=self.events.describe(stream),
            )

    def _batch_handler(self, stream: str) -> BatchHandler:
        async def handle(batch: Sequence[Delivery]) -> None:
            async with self.gate.passage():
                await self.handle_batch(stream, batch)

        return handle

    async def handle(
        self, stream: str, raw: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Apply one message: a batch of one."""
        await self.handle_batch(stream, [(raw, headers or {})])

    async def handle_batch(self, stream: str, batch: Sequence[Delivery]) -> None:
        """Apply a batch; returns normally unless the whole batch must be redelivered."""
        if not batch:
            return
        started_ns = time.time_ns()
        try:
            await self._handle_batch(stream, batch)
        finally:
            # A span per message, in its own trace, timed as the batch that applied it.
            attributes = {
                "messaging.destination.name": stream,
                "messaging.batch.message_count": str(len(batch)),
                "service": self.service,
            }
            ended_ns = time.time_ns()
            for _, headers in batch:
                tracing.record(
                    f"process {stream}",
                    SpanKind.CONSUMER,
                    headers,
                    started_ns,
                    ended_ns,
                    attributes,
                )

    async def _handle_batch(self, stream: str, batch: Sequence[Delivery]) -> None:
        incoming = await self._decode(stream, batch)
        if not incoming:
            return
        started = time.perf_counter()
        try:
            outcome = await self._apply_once_running(stream, incoming)
        except Paused:
            raise  # still paused: the broker redelivers the batch
        except Exception as exc:
            if len(incoming) == 1:
                await self._failed(stream, incoming[0], repr(exc))
                return
            log.warning("a batch of %d failed (%r); one at a time", len(incoming), exc)
            outcome = Outcome()
            for item in incoming:
                try:
                    alone = await self._apply(stream, [item])
                except Paused:
                    raise
                except Exception as item_exc:
                    await self._failed(stream, item, repr(item_exc))
                    continue
                outcome.applied += alone.applied
                outcome.duplicates += alone.duplicates
                outcome.not_due += alone.not_due
        HANDLER_SECONDS.labels(stream=stream).observe(time.perf_counter() - started)
        for item in outcome.applied:
            EVENTS_CONSUMED.labels(stream=stream, type=item.event.type).inc()
        if outcome.duplicates:
            EVENTS_DUPLICATE.labels(stream=stream).inc(outcome.duplicates)
        for item, reason in outcome.not_due:
            EVENTS_WAITING.labels(stream=stream).inc()
            await self._failed(stream, item, reason, waiting=True)

    async def _decode(self, stream: str, batch: Sequence[Delivery]) -> list[Incoming]:
        """The batch's events this service handles; bad messages go to the dead letters."""
        incoming = []
        for raw, headers in batch:
            try:
                event = self.events.parse(raw)
            except InvalidEvent as exc:
                await self._dead_letter(stream, raw, exc.event, str(exc), attempts=0)
                continue
            if self.subscriptions.takes(stream, event.type):  # else none takes its type
                handlers = self.subscriptions.handlers(stream, event.type)
                incoming.append(Incoming(event, raw, headers, handlers))
        return incoming

    async def _apply_once_running(self, stream: str, incoming: list[Incoming]) -> Outcome:
        """Apply the batch, waiting (up to PAUSE_WAIT_SECONDS) while a rebuild runs."""
        waited_until = time.monotonic() + PAUSE_WAIT_SECONDS
        while True:
            try:
                return await self._apply(stream, incoming)
            except Paused:
                if time.monotonic() > waited_until:
                    raise
                await asyncio.sleep(0.5)

    async def _apply(self, stream: str, incoming: list[Incoming]) -> Outcome:
        """Every handler that takes each event, and the inbox rows, in one transaction."""
        outcome = Outcome()
        async with self.db.transaction() as session:
            if not self.replay:
                await check_running(session)
            seen = await _seen(session, [str(item.event.id) for item in incoming])
            # Order per aggregate: only where this service sees every type of the stream,
            # since a type it does not take never arrives to advance the position.
            positions = None
            if self.subscriptions.types(stream) is None:
                positions = await Positions.load(session, stream, [i.event for i in incoming])
            processed = []
            # An aggregate's events in sequence order, whatever order they came in.
            for item in sorted(incoming, key=lambda i: i.event.sequence or 0):
                event_id = str(item.event.id)
                if event_id in seen:
                    outcome.duplicates += 1
                    continue
                turn = positions.take_turn(item.event) if positions else Turn.NEXT
                if turn is Turn.NOT_YET and positions is not None:
                    outcome.not_due.append((item, positions.waiting_for(item.event)))
                    continue
                seen.add(event_id)
                processed.append(_inbox_row(item.event, stream))
                if turn is Turn.OLDER:  # recorded, not applied
                    outcome.duplicates += 1
                    continue
                context.event_id.set(event_id)
                context.event_type.set(item.event.type)
                context.correlation_id.set(item.event.correlation_id)
                for handler in item.handlers:
                    await handler(item.event, session)
                outcome.applied.append(item)
            for subscription in self.subscriptions.batch_subscriptions(stream):
                events = [i.event for i in outcome.applied if subscription.takes(i.event.type)]
                if events:
                    await subscription.handler(events, session)  # type: ignore[arg-type]
            if processed:
                await session.execute(insert(ProcessedEvent), processed)
        return outcome

    async def _failed(self, stream: str, item: Incoming, error: str, waiting: bool = False) -> None:
        """Retry `item` later through the broker, or dead-letter it once retries run out."""
        attempt = item.attempts + 1
        event = item.event
        if self.replay or attempt > self.transport.config.max_retries:
            if not waiting:
                log.error("giving up on %s %s: %s", event.type, event.id, error)
            await self._dead_letter(stream, item.raw, event, error, attempts=attempt)
            return
        if not waiting:
            EVENTS_RETRIED.labels(stream=stream).inc()
            log.warning("attempt %d of %s %s failed: %s", attempt, event.type, event.id, error)
        delay = self.transport.config.retry_delay(attempt)
        headers = {**item.headers, ATTEMPTS_HEADER: str(attempt)}
        await self.transport.publish_retry(
            stream, item.raw, headers, key=event.aggregate_id or "", delay=delay
        )

    async def _dead_letter(
        self, stream: str, raw: bytes, event: Envelope | None, error: str, *, attempts: int
    ) -> None:
        log.error("dead-lettering a message of %s: %s", stream, error)
        failed_at = datetime.now(UTC)
        key = (event.aggregate_id if event else None) or ""
        headers = {
            "x-error": error[:1000],
            "x-attempts": str(attempts),
            "x-original-topic": stream,
            "x-failed-at": failed_at.isoformat(),
            "x-service": self.service,
        }
        # The broker's dead letters first: if that fails the message is redelivered.
        await self.transport.publish_dead_letter(raw, headers, key=key)
        async with self.db.transaction() as session:
            if event is not None:  # one entry per event: a repeat failure refreshes it
                earlier = delete(DeadLetter).where(DeadLetter.event_id == str(event.id))
                await session.execute(earlier)
            session.add(
                DeadLetter(
                    event_id=str(event.id) if event else None,
                    event_type=event.type if event else None,
                    stream=stream,
                    key=key,
                    error=error,
                    attempts=attempts,
                    failed_at=failed_at,
                    payload=raw,
                )
            )
        EVENTS_DEAD_LETTERED.labels(stream=stream).inc()


async def _seen(session: AsyncSession, event_ids: list[str]) -> set[str]:
    """Which of `event_ids` the inbox holds: one query for a batch."""
    query = select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(event_ids))
    return set((await session.execute(query)).scalars())


def _inbox_row(event: Envelope, stream: str) -> dict[str, object]:
    return {
        "event_id": str(event.id),
        "event_type": event.type,
        "stream": stream,
        "processed_at": datetime.now(UTC),
    }
