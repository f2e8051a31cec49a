"""The consumer: the path every received message takes into a service's database.

Decode and validate (bad messages go straight to the dead letters), skip events the
inbox has seen, apply the handlers in the same transaction as the inbox row, retry a
failing handler with exponential backoff and jitter, then dead-letter it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.trace import SpanKind
from sqlalchemy import delete

from eventkit import context, tracing
from eventkit.db import Database
from eventkit.dead_letters import DeadLetter
from eventkit.envelope import Envelope
from eventkit.inbox import NotYetDue, ProcessedEvent, take_turn
from eventkit.metrics import (
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_RETRIED,
    EVENTS_WAITING,
    HANDLER_SECONDS,
)
from eventkit.registry import EventRegistry, InvalidEvent
from eventkit.settings import default
from eventkit.subscriptions import Handler, Subscriptions
from eventkit.transports import RawHandler, Transport

log = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    max_retries: int = default("MAX_RETRIES")
    base_seconds: float = default("RETRY_BACKOFF_SECONDS")
    max_seconds: float = default("RETRY_BACKOFF_MAX_SECONDS")
    # How long an event may wait for an earlier one of its aggregate before it is parked.
    order_wait_seconds: float = default("ORDER_WAIT_SECONDS")

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff after failed attempt number `attempt` (1-based)."""
        return random.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)))


class Gate:
    """Lets handlers run side by side until closed; closing waits for those in flight.

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


class Consumer:
    """Applies the raw messages of one service's streams to its database."""

    def __init__(
        self,
        service: str,
        subscriptions: Subscriptions,
        events: EventRegistry,
        db: Database,
        transport: Transport,
        retry: RetryPolicy,
    ) -> None:
        self.service = service
        self.subscriptions = subscriptions
        self.events = events
        self.db = db
        self.transport = transport
        self.retry = retry
        self.gate = Gate()

    def attach(self) -> None:
        for stream in self.subscriptions.streams:
            self.transport.subscribe(
                stream,
                self._raw_handler(stream),
                types=self.subscriptions.types(stream),
                description=self.events.describe(stream),
            )

    def _raw_handler(self, stream: str) -> RawHandler:
        async def handle(body: bytes, headers: Mapping[str, str]) -> None:
            async with self.gate.passage():
                await self.handle(stream, body, headers)

        return handle

    async def handle(
        self, stream: str, raw: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Apply one message; returns normally unless it must be redelivered."""
        name = f"process {stream}"
        attributes = {"messaging.destination.name": stream, "service": self.service}
        with tracing.span(name, SpanKind.CONSUMER, parent=headers or {}, attributes=attributes):
            await self._handle(stream, raw)

    async def _handle(self, stream: str, raw: bytes) -> None:
        try:
            event = self.events.parse(raw)
        except InvalidEvent as exc:
            await self._dead_letter(stream, raw, exc.event, str(exc), attempts=0)
            return
        handlers = self.subscriptions.handlers(stream, event.type)
        if not handlers:  # a type none of this service's handlers take
            return
        context.event_id.set(str(event.id))
        context.event_type.set(event.type)
        context.correlation_id.set(event.correlation_id)
        attempt, waits, first_try = 0, 0, time.monotonic()
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                applied = await self._apply(stream, event, handlers)
            except NotYetDue as exc:
                EVENTS_WAITING.labels(stream=stream).inc()
                attempt, waits = attempt - 1, waits + 1  # waiting is not failing
                if time.monotonic() - first_try > self.retry.order_wait_seconds:
                    await self._dead_letter(stream, raw, event, str(exc), attempts=waits)
                    return
                await asyncio.sleep(self.retry.delay(min(waits, 8)))
                continue
            except Exception as exc:
                EVENTS_RETRIED.labels(stream=stream).inc()
                if attempt > self.retry.max_retries:
                    log.exception("giving up on %s %s", event.type, event.id)
                    await self._dead_letter(stream, raw, event, repr(exc), attempts=attempt)
                    return
                log.warning("attempt %d of %s %s failed: %r", attempt, event.type, event.id, exc)
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            HANDLER_SECONDS.labels(stream=stream).observe(time.perf_counter() - started)
            if applied:
                EVENTS_CONSUMED.labels(stream=stream, type=event.type).inc()
            else:
                EVENTS_DUPLICATE.labels(stream=stream).inc()
            return

    async def _apply(self, stream: str, event: Envelope, handlers: list[Handler]) -> bool:
        """Every handler that takes the event, and its inbox row, in one transaction."""
        async with self.db.transaction() as session:
            if await session.get(ProcessedEvent, str(event.id)) is not None:
                return False
            session.add(
                ProcessedEvent(
                    event_id=str(event.id),
                    event_type=event.type,
                    stream=stream,
                    processed_at=datetime.now(UTC),
                )
            )
            # Order per aggregate: only where this service sees every type of the stream,
            # since a type it does not take never arrives to advance the position.
            in_order = self.subscriptions.types(stream) is None
            if in_order and not await take_turn(session, stream, event):
                return False  # an older event of its aggregate: recorded, not applied
            for handler in handlers:
                await handler(event, session)
        return True

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
