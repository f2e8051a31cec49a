"""The consumer: the path every received message takes into a service's database.

Messages arrive in batches. A message whose type (its `event-type` header, or its decoded
type) no handler of this service takes is passed over. Bad messages (not JSON, not an
envelope, invalid data) go straight to the dead letters. An event of a type or version
this service does not know yet (its publisher was deployed first) is listed in the dead
letters at once, with the reason, and held: retried on the longest delay, its aggregate's
later events waiting with it, until a deploy knows it (then it is applied and leaves the
list) or `unknown_event_hold_seconds` pass (then it is dead-lettered for good).

The rest are applied in one transaction: one inbox query for the whole batch, each
aggregate's events in sequence order, the inbox rows written beside the read models. If
that transaction fails, each event is tried alone, so one bad event cannot hold back the
others. An event that fails alone, or whose aggregate's earlier event has not been
applied yet, goes to a delayed retry through the broker (the stream goes on meanwhile);
after `max_retries` it goes to the dead letters.

A database that does not answer is not a failing event: the batch waits for it (up to
`batch_hold_seconds`), then goes back to the broker to be delivered again. No retry is
spent and nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from opentelemetry.trace import SpanKind
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import clock, context, tracing
from eventkit.db import Database, database_unavailable, table_of
from eventkit.dead_letters import DeadLetter
from eventkit.envelope import Envelope
from eventkit.inbox import Positions, ProcessedEvent, Turn
from eventkit.metrics import (
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_DUPLICATE,
    EVENTS_HELD,
    EVENTS_RETRIED,
    EVENTS_WAITING,
    HANDLER_SECONDS,
)
from eventkit.pause import Paused, check_running
from eventkit.registry import EventRegistry, InvalidEvent, UnknownEvent
from eventkit.subscriptions import Handler, Subscriptions
from eventkit.transports import BatchHandler, Delivery, Transport

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-attempts"
# When this consumer first held an event it does not know yet (epoch seconds).
HELD_SINCE_HEADER = "x-held-since"
# The type a publisher gave a message (see the transports' publish): read before decoding.
EVENT_TYPE_HEADER = "event-type"
COUNT = re.compile(r"[0-9]{1,9}")  # ASCII digits only
EPOCH = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
# A connection error that recurs while the database answers pings is the event's own.
RETRIES_WHILE_ANSWERING = 2


class DatabaseUnavailable(Exception):
    """The database did not answer within the batch's hold: the broker delivers the batch
    again later. No retry was spent and nothing was dead-lettered."""


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


def header_count(value: str | None) -> int:
    """A count we wrote into a header; anything else (`²` passes str.isdigit(), and int()
    then refuses it) counts as 0 rather than failing the batch for ever."""
    return int(value) if value is not None and COUNT.fullmatch(value) else 0


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
        return header_count(self.headers.get(ATTEMPTS_HEADER))


@dataclass
class Rejected:
    """A message no handler can ever apply: it goes to the dead letters as it is."""

    raw: bytes
    event: Envelope | None
    reason: str


@dataclass
class Sorted:
    """A batch's messages by what becomes of them."""

    incoming: list[Incoming] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    held: list[tuple[Incoming, str]] = field(default_factory=list)  # not known yet: why


@dataclass
class Outcome:
    applied: list[Incoming] = field(default_factory=list)
    duplicates: int = 0
    # Their aggregate's earlier event is not applied yet: retried later; the time is when
    # to look again without spending a retry (a tentative position, an event held).
    not_due: list[tuple[Incoming, str, datetime | None]] = field(default_factory=list)
    failed: list[tuple[Incoming, str]] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.not_due += other.not_due
        self.failed += other.failed


class NotKnownHere(Exception):
    """A rebuild's feed holds an event this service does not know yet: the rebuild fails
    (the read model stays paused, with the reason) rather than dead-letter a good event."""


class _DatabaseDown(Exception):
    """Inside a batch: the database stopped answering."""


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
        # A rebuild's replay: it runs while live consumption is paused; what fails goes to
        # the live consumer's retries, as a live failure does (it may need an event of
        # another stream that the broker has not delivered yet).
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

    def _ordered(self, stream: str) -> bool:
        """Order per aggregate: only where this service sees every type of the stream, since
        a type it does not take never arrives to advance the position."""
        return self.subscriptions.types(stream) is None

    async def _handle_batch(self, stream: str, batch: Sequence[Delivery]) -> None:
        deadline = time.monotonic() + self.transport.config.batch_hold_seconds
        context.forget_event()
        found = self._sort(stream, batch)
        started = time.perf_counter()
        outcome = await self._apply_waiting(stream, found.incoming, deadline)
        context.forget_event()  # what follows logs each message as itself
        if found.incoming:
            HANDLER_SECONDS.labels(stream=stream).observe(time.perf_counter() - started)
        for event_type, count in Counter(item.event.type for item in outcome.applied).items():
            EVENTS_CONSUMED.labels(stream=stream, type=event_type).inc(count)
        if outcome.duplicates:
            EVENTS_DUPLICATE.labels(stream=stream).inc(outcome.duplicates)
        # What follows writes dead letters and hands events back to the broker: if the
        # database stops answering meanwhile, the batch is delivered again.
        try:
            for rejected in found.rejected:
                await self._reject(stream, rejected)
            for item, reason in found.held:
                await self._hold(stream, item, reason)
            for item, error in outcome.failed:
                await self._failed(stream, item, error)
            for item, reason, until in outcome.not_due:
                EVENTS_WAITING.labels(stream=stream).inc()
                if until is not None and self.transport.config.retry_tiers:
                    await self._postpone(stream, item, until)
                else:
                    await self._failed(stream, item, reason, waiting=True)
        except Exception as exc:
            if await self._database_answers():
                raise
            await self._wait_for_database(deadline)
            raise DatabaseUnavailable(f"the database stopped answering: {exc!r}") from exc

    def _sort(self, stream: str, batch: Sequence[Delivery]) -> Sorted:
        """Decode the batch; what no handler here takes is passed over, unread if its
        `event-type` header says so."""
        found = Sorted()
        for raw, headers in batch:
            declared = headers.get(EVENT_TYPE_HEADER)
            if declared and not self.subscriptions.takes(stream, declared):
                continue
            try:
                event = self.events.parse(raw)
            except UnknownEvent as exc:
                if self.subscriptions.takes(stream, exc.event.type):
                    found.held.append((Incoming(exc.event, raw, headers, []), str(exc)))
                continue
            except InvalidEvent as exc:
                if exc.event is None or self.subscriptions.takes(stream, exc.event.type):
                    found.rejected.append(Rejected(raw, exc.event, str(exc)))
                continue
            if self.subscriptions.takes(stream, event.type):
                handlers = self.subscriptions.handlers(stream, event.type)
                found.incoming.append(Incoming(event, raw, headers, handlers))
        return found

    async def _apply_waiting(
        self, stream: str, incoming: list[Incoming], deadline: float
    ) -> Outcome:
        """Apply `incoming`, waiting (up to `deadline`) while a rebuild runs or while the
        database does not answer; past it, the batch goes back to the broker."""
        if not incoming:
            return Outcome()
        answering_failures = 0
        while True:
            # A lost connection that keeps coming back while the database answers pings
            # is the event's own doing (a handler's), not the database's.
            lost_is_down = answering_failures < RETRIES_WHILE_ANSWERING
            try:
                return await self._apply_or_each_alone(stream, incoming, lost_is_down)
            except Paused:
                if time.monotonic() > deadline:
                    raise  # still paused: the broker delivers the batch again
                await asyncio.sleep(0.5)
            except _DatabaseDown as down:
                cause = down.__cause__
                if await self._database_answers():
                    answering_failures += 1  # a connection lost, and it answers again
                    continue
                log.warning("the database does not answer (%r); %s waits", cause, stream)
                if not await self._wait_for_database(deadline):
                    raise DatabaseUnavailable(
                        f"the database does not answer: {cause!r}; delivered again later"
                    ) from cause

    async def _apply_or_each_alone(
        self, stream: str, incoming: list[Incoming], lost_is_down: bool
    ) -> Outcome:
        """The batch in one transaction; if that fails, each event alone, so one bad event
        cannot hold back the others. A lost database raises _DatabaseDown instead."""
        try:
            return await self._apply(stream, incoming)
        except Paused:
            raise
        except Exception as exc:
            if await self._lost_database(exc, lost_is_down):
                raise _DatabaseDown from exc
            if len(incoming) == 1:
                return Outcome(failed=[(incoming[0], repr(exc))])
            log.warning("a batch of %d failed (%r); one at a time", len(incoming), exc)
        outcome = Outcome()
        for item in incoming:
            try:
                outcome.add(await self._apply(stream, [item]))
            except Paused:
                raise
            except Exception as exc:
                if await self._lost_database(exc, lost_is_down):
                    raise _DatabaseDown from exc
                outcome.failed.append((item, repr(exc)))
        return outcome

    async def _lost_database(self, exc: BaseException, lost_is_down: bool) -> bool:
        """Whether `exc` is the database's, not the event's: a lost connection or a
        timeout (when `lost_is_down`), or any error while the database does not answer."""
        return (lost_is_down and database_unavailable(exc)) or not await self._database_answers()

    async def _database_answers(self) -> bool:
        try:
            await asyncio.wait_for(self.db.ping(), timeout=2.0)
        except Exception:
            return False
        return True

    async def _wait_for_database(self, deadline: float) -> bool:
        """Wait, backing off, until the database answers (True) or `deadline` passes."""
        pause = 0.2
        while True:
            if await self._database_answers():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 5.0)

    async def _apply(self, stream: str, incoming: list[Incoming]) -> Outcome:
        """Every handler that takes each event, and the inbox rows, in one transaction."""
        outcome = Outcome()
        async with self.db.transaction() as session:
            if not self.replay:
                await check_running(session)
            seen = await _seen(session, [str(item.event.id) for item in incoming])
            positions = None
            if self._ordered(stream):
                positions = await Positions.load(
                    session, stream, [i.event for i in incoming], self._opening()
                )
            processed = []
            # An aggregate's events in sequence order, whatever order they came in.
            for item in sorted(incoming, key=lambda i: i.event.sequence or 0):
                event_id = str(item.event.id)
                if event_id in seen:
                    outcome.duplicates += 1
                    continue
                if positions is not None and HELD_SINCE_HEADER in item.headers:
                    positions.release(item.event, self._hold_grace())  # known now
                turn = positions.take_turn(item.event) if positions else Turn.NEXT
                if turn is Turn.NOT_YET and positions is not None:
                    reason = positions.waiting_for(item.event)
                    outcome.not_due.append((item, reason, positions.wait_until(item.event)))
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
                await session.execute(_RECORD, processed)
            # Held events a deploy now knows leave the dead letters with their apply.
            held = [str(i.event.id) for i in outcome.applied if HELD_SINCE_HEADER in i.headers]
            if held:
                await session.execute(delete(DeadLetter).where(DeadLetter.event_id.in_(held)))
        return outcome

    def _opening(self) -> timedelta:
        """How long a position opened at an aggregate's first event seen (not its #1) stays
        tentative. A replay reads a publisher's whole feed in order, and without retries
        nothing can wait: there it stands at once."""
        if self.replay or not self.transport.config.retry_tiers:
            return timedelta(0)
        return timedelta(seconds=self.transport.config.first_event_wait_seconds)

    async def _see(
        self, stream: str, event: Envelope | None, held_until: float = 0, known: bool = False
    ) -> None:
        """Note in its aggregate's position that `event` came, though it was not applied, so
        the position does not open later than it (and, if held, its later events wait).
        `known`: it was held before and failed as a known event does now, so its hold lifts
        (its later events wait for it as for any failure, not for the rest of the hold)."""
        if event is None or event.aggregate_id is None or event.sequence is None:
            return
        if not self._ordered(stream):
            return
        async with self.db.transaction() as session:
            positions = await Positions.load(session, stream, [event], self._opening())
            if known:
                positions.release(event, self._hold_grace())
            if held_until:
                positions.hold(event, datetime.fromtimestamp(held_until, UTC))
            else:
                positions.see(event)

    def _hold_grace(self) -> timedelta:
        """How long events a lifted hold put off may still be in the broker's retries."""
        tiers = self.transport.config.retry_tiers
        return timedelta(seconds=tiers[-1]) if tiers else timedelta(0)

    async def _failed(self, stream: str, item: Incoming, error: str, waiting: bool = False) -> None:
        """Retry `item` later through the broker, or dead-letter it once retries run out."""
        attempt = item.attempts + 1
        event = item.event
        if not waiting:
            await self._see(stream, event, known=HELD_SINCE_HEADER in item.headers)
        if attempt > self.transport.config.max_retries:
            if not waiting:
                log.error("giving up on %s %s: %s", event.type, event.id, error)
            await self._dead_letter(stream, item.raw, event, error, attempts=attempt)
            return
        if not waiting:
            EVENTS_RETRIED.labels(stream=stream).inc()
            log.warning("attempt %d of %s %s failed: %s", attempt, event.type, event.id, error)
        delay = self.transport.config.retry_delay(attempt)
        headers = {**item.headers, ATTEMPTS_HEADER: str(attempt)}
        await self.transport.publish_retry(stream, item.raw, headers, key=event.key, delay=delay)

    async def _postpone(self, stream: str, item: Incoming, until: datetime) -> None:
        """Give `item` back after the shortest retry delay that reaches `until` (else the
        longest), spending no attempt."""
        remaining = (until - clock.utcnow()).total_seconds()
        tiers = self.transport.config.retry_tiers
        delay = next((tier for tier in tiers if tier >= remaining), tiers[-1])
        await self.transport.publish_retry(
            stream, item.raw, dict(item.headers), key=item.event.key, delay=delay
        )

    async def _hold(self, stream: str, item: Incoming, reason: str) -> None:
        """An event this service does not know yet: retried on the longest delay until a
        deploy knows it, its aggregate's later events waiting with it; dead-lettered once
        `unknown_event_hold_seconds` have passed since it was first held."""
        event, config = item.event, self.transport.config
        now = clock.now()
        given = item.headers.get(HELD_SINCE_HEADER, "")
        since = min(float(given), now) if EPOCH.fullmatch(given) else now
        if self.replay:
            raise NotKnownHere(f"{reason}: deploy this service with the events it lacks first")
        if not config.retry_tiers or now - since >= config.unknown_event_hold_seconds:
            held = f"; held {now - since:.0f} s" if now > since else ""
            await self._see(stream, event)
            await self._dead_letter(
                stream,
                item.raw,
                event,
                f"{reason}{held}: deploy this service with the events it lacks, then replay",
                attempts=item.attempts,
            )
            return
        until = since + config.unknown_event_hold_seconds
        await self._see(stream, event, held_until=until)
        if since == now:
            log.warning(
                "holding %s %s: %s (consumers go first when a new event type or version "
                "is deployed)",
                event.type,
                event.id,
                reason,
            )
            held = (
                f"{reason}; held: retried every {config.retry_tiers[-1]:g} s until a deploy "
                f"of this service knows it, dead-lettered for good at "
                f"{datetime.fromtimestamp(until, UTC).isoformat(timespec='seconds')}"
            )
            await self._list_dead_letter(stream, item.raw, event, held, attempts=item.attempts)
        EVENTS_HELD.labels(stream=stream, type=event.type).inc()
        headers = {**item.headers, HELD_SINCE_HEADER: f"{since:.3f}"}
        await self.transport.publish_retry(
            stream, item.raw, headers, key=event.key, delay=config.retry_tiers[-1]
        )

    async def _reject(self, stream: str, rejected: Rejected) -> None:
        await self._see(stream, rejected.event)
        await self._dead_letter(stream, rejected.raw, rejected.event, rejected.reason, attempts=0)

    async def _dead_letter(
        self, stream: str, raw: bytes, event: Envelope | None, error: str, *, attempts: int
    ) -> None:
        described = f"{event.type} {event.id}" if event is not None else "a message"
        log.error("dead-lettering %s of %s: %s", described, stream, error)
        failed_at = datetime.now(UTC)
        key = event.key if event else ""
        headers = {
            "x-error": error[:1000],
            "x-attempts": str(attempts),
            "x-original-topic": stream,
            "x-failed-at": failed_at.isoformat(),
            "x-service": self.service,
        }
        # The broker's dead letters first: if that fails the message is redelivered.
        await self.transport.publish_dead_letter(raw, headers, key=key)
        await self._list_dead_letter(stream, raw, event, error, attempts=attempts, at=failed_at)
        EVENTS_DEAD_LETTERED.labels(stream=stream).inc()

    async def _list_dead_letter(
        self,
        stream: str,
        raw: bytes,
        event: Envelope | None,
        error: str,
        *,
        attempts: int,
        at: datetime | None = None,
    ) -> None:
        """The entry `GET /dlq` shows: one per event, a repeat refreshing it."""
        key = event.key if event else ""
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
                    failed_at=at or datetime.now(UTC),
                    payload=raw,
                )
            )


# Statements every batch runs, built once.
_SEEN = select(ProcessedEvent.event_id).where(
    ProcessedEvent.event_id.in_(bindparam("ids", expanding=True))
)
_RECORD = insert(table_of(ProcessedEvent))


async def _seen(session: AsyncSession, event_ids: list[str]) -> set[str]:
    """Which of `event_ids` the inbox holds: one query for a batch."""
    return set((await session.execute(_SEEN, {"ids": event_ids})).scalars())


def _inbox_row(event: Envelope, stream: str) -> dict[str, object]:
    return {
        "event_id": str(event.id),
        "event_type": event.type,
        "stream": stream,
        "processed_at": datetime.now(UTC),
    }
