"""Subscribing: `@consumer.on_message(stream)`, and the pipeline every message goes through.

Decode and validate (bad messages go straight to the dead letters), skip events the
inbox has seen, apply the handler in the same transaction as the inbox row, retry a
failing handler with exponential backoff and jitter, then dead-letter it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opentelemetry.trace import SpanKind
from sqlalchemy import LargeBinary, String, Text, delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import context, tracing
from eventkit.db import Base, Database
from eventkit.envelope import Envelope
from eventkit.events import InvalidEvent, parse
from eventkit.inbox import ProcessedEvent
from eventkit.metrics import (
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_RETRIED,
    HANDLER_SECONDS,
)
from eventkit.transport import RawHandler, Transport

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, AsyncSession], Awaitable[None]]


class DeadLetter(Base):
    """An event this service gave up on, kept so it can be listed and replayed."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(36), index=True)
    event_type: Mapped[str | None] = mapped_column(String(100))
    stream: Mapped[str] = mapped_column(String(200))
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int]
    failed_at: Mapped[datetime] = mapped_column()
    # The message exactly as received, so it can be replayed byte for byte.
    payload: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass
class Consumer:
    """The streams one service subscribes to, and the handler for each."""

    service: str
    handlers: dict[str, Handler] = field(default_factory=dict)

    def on_message(self, stream: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if stream in self.handlers:
                raise ValueError(f"{self.service} already has a handler for {stream}")
            self.handlers[stream] = handler
            return handler

        return register


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_seconds: float = 0.2
    max_seconds: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff after failed attempt number `attempt` (1-based)."""
        return random.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)))


class Gate:
    """Lets handlers run side by side until closed; closing waits for those in flight.

    A rebuild closes the live pipeline's gate so no live event lands mid-rebuild.
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


class Pipeline:
    """Applies raw messages of one service's streams to its database."""

    def __init__(
        self, consumer: Consumer, db: Database, transport: Transport, retry: RetryPolicy
    ) -> None:
        self.consumer = consumer
        self.db = db
        self.transport = transport
        self.retry = retry
        self.gate = Gate()

    def attach(self) -> None:
        for stream in self.consumer.handlers:
            self.transport.subscribe(stream, self._raw_handler(stream))

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
        attributes = {"messaging.destination.name": stream, "service": self.consumer.service}
        with tracing.span(name, SpanKind.CONSUMER, parent=headers or {}, attributes=attributes):
            await self._handle(stream, raw)

    async def _handle(self, stream: str, raw: bytes) -> None:
        try:
            event = parse(raw)
        except InvalidEvent as exc:
            await self._dead_letter(stream, raw, exc.event, str(exc), attempts=0)
            return
        context.event_id.set(str(event.id))
        context.event_type.set(event.type)
        context.correlation_id.set(event.correlation_id)
        handler = self.consumer.handlers[stream]
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                applied = await self._apply(stream, event, handler)
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

    async def _apply(self, stream: str, event: Envelope, handler: Handler) -> bool:
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
            await handler(event, session)
        return True

    async def _dead_letter(
        self, stream: str, raw: bytes, event: Envelope | None, error: str, *, attempts: int
    ) -> None:
        log.error("dead-lettering a message of %s: %s", stream, error)
        failed_at = datetime.now(UTC)
        headers = {
            "x-error": error[:1000],
            "x-attempts": str(attempts),
            "x-original-topic": stream,
            "x-failed-at": failed_at.isoformat(),
            "x-service": self.consumer.service,
        }
        # The broker's dlq.<service> first: if that fails the message is redelivered.
        await self.transport.publish_dead_letter(self.consumer.service, raw, headers)
        async with self.db.transaction() as session:
            if event is not None:  # one entry per event: a repeat failure refreshes it
                earlier = delete(DeadLetter).where(DeadLetter.event_id == str(event.id))
                await session.execute(earlier)
            session.add(
                DeadLetter(
                    event_id=str(event.id) if event else None,
                    event_type=event.type if event else None,
                    stream=stream,
                    error=error,
                    attempts=attempts,
                    failed_at=failed_at,
                    payload=raw,
                )
            )
        EVENTS_DEAD_LETTERED.labels(stream=stream).inc()
