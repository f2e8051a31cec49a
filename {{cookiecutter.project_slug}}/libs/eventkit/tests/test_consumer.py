"""The consumer: batches, inbox, handlers by type, delayed retries, dead letters (real DB)."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, Subscriptions
from eventkit.consumer import Consumer
from eventkit.db import Database
from eventkit.dead_letters import DeadLetter
from eventkit.inbox import ProcessedEvent
from eventkit.metrics import EVENTS_WAITING
from eventkit.testing import async_wait_until
from eventkit.transports import DeliveryConfig
from eventkit.transports.memory import MemoryConfig, MemoryTransport
from sample_domain import THINGS, happened, things_registry, vanished


class Recorder:
    """A handler that fails its first `failures` calls (or always, for `poison` things).

    It records what it applied; a test's transaction may still roll that back, so tests
    that mind count inbox rows too.
    """

    def __init__(self, failures: int = 0, poison: str = "") -> None:
        self.failures = failures
        self.poison = poison
        self.calls = 0
        self.applied: list[str] = []

    async def __call__(self, event: Envelope, session: AsyncSession) -> None:
        self.calls += 1
        if self.calls <= self.failures or event.data["thing_id"] == self.poison:
            raise RuntimeError(f"boom {self.calls}")
        self.applied.append(event.data["thing_id"])


def make_consumer(
    db: Database, *handlers: Recorder, max_retries: int = 3, types: list[str] | None = None
) -> Consumer:
    subscriptions = Subscriptions()
    for handler in handlers:
        subscriptions.on_message(THINGS, types=types)(handler)
    config = MemoryConfig(service="probe", max_retries=max_retries, retry_delays_seconds=(0.01,))
    transport = MemoryTransport(config)
    TRANSPORTS.append(transport)
    consumer = Consumer("probe", subscriptions, things_registry(), db, transport)
    consumer.attach()  # retries come back through the transport
    return consumer


TRANSPORTS: list[MemoryTransport] = []


@pytest.fixture(autouse=True)
async def stop_transports(db: Database) -> AsyncIterator[None]:
    """Retries still waiting when a test ends are dropped, before its database is closed."""
    yield
    while TRANSPORTS:
        await TRANSPORTS.pop().stop()


async def dead_letters(db: Database) -> list[DeadLetter]:
    async with db.sessions() as session:
        return list((await session.scalars(select(DeadLetter))).all())


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_redelivered_event_is_applied_once(db: Database) -> None:
    handler = Recorder()
    consumer = make_consumer(db, handler)
    message = vanished().to_bytes()
    await consumer.handle(THINGS, message)
    await consumer.handle(THINGS, message)
    assert handler.applied == ["t1"]
    assert await count(db, ProcessedEvent) == 1


async def test_every_handler_of_a_stream_runs_with_one_inbox_row(db: Database) -> None:
    first, second, only_happened = Recorder(), Recorder(), Recorder()
    consumer = make_consumer(db, first, second)
    consumer.subscriptions.on_message(THINGS, types=["Happened"])(only_happened)
    await consumer.handle(THINGS, happened("a").to_bytes())
    await consumer.handle(THINGS, vanished("b").to_bytes())
    assert (first.applied, second.applied, only_happened.applied) == (["a", "b"], ["a", "b"], ["a"])
    assert await count(db, ProcessedEvent) == 2
    assert consumer.subscriptions.types(THINGS) is None  # one handler takes every type


async def test_a_type_no_handler_takes_is_passed_over(db: Database) -> None:
    handler = Recorder()
    consumer = make_consumer(db, handler, types=["Happened"])
    await consumer.handle(THINGS, vanished().to_bytes())
    assert handler.calls == 0
    assert (await count(db, ProcessedEvent), await count(db, DeadLetter)) == (0, 0)
    assert consumer.subscriptions.types(THINGS) == {"Happened"}


async def test_a_failing_event_is_retried_later_through_the_broker_then_succeeds(
    db: Database,
) -> None:
    handler = Recorder(failures=2)
    consumer = make_consumer(db, handler)
    await consumer.handle(THINGS, vanished().to_bytes())
    assert handler.applied == []  # the stream was not held: the retry waits in the broker
    await async_wait_until(lambda: asyncio.sleep(0, handler.applied == ["t1"]), what="retries")
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    assert [headers["x-attempts"] for _, _, headers, _ in transport.retries] == ["1", "2"]
    assert handler.calls == 3 and await count(db, DeadLetter) == 0


async def test_a_poison_event_is_dead_lettered_with_its_key(db: Database) -> None:
    handler = Recorder(poison="poison")  # the first try and 3 retries all fail
    consumer = make_consumer(db, handler, max_retries=3)
    poison = vanished("poison")
    await consumer.handle(THINGS, poison.to_bytes())
    await consumer.handle(THINGS, vanished("next").to_bytes())
    assert handler.applied == ["next"]  # not held up by the poison's retries
    await async_wait_until(
        lambda: asyncio.sleep(0, handler.calls == 5), what="the poison's four tries"
    )
    await async_wait_until(lambda: count(db, DeadLetter), what="the dead letter")
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
        processed = set(await session.scalars(select(ProcessedEvent.event_id)))
    assert (letter.event_id, letter.attempts, letter.stream) == (str(poison.id), 4, THINGS)
    assert letter.key == "poison"  # the aggregate id it was published with
    assert "boom 5" in letter.error  # the last try's error (the 2nd call was "next")
    assert str(poison.id) not in processed  # its failed attempts left no trace


async def test_a_malformed_message_goes_straight_to_the_dead_letters(db: Database) -> None:
    handler = Recorder()
    await make_consumer(db, handler).handle(THINGS, b"\x00not json")
    assert handler.calls == 0
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert (letter.attempts, letter.key) == (0, "")
    assert letter.error.startswith("not valid JSON")


def test_retry_delays_follow_the_schedule_and_the_last_repeats() -> None:
    config = DeliveryConfig(max_retries=5, retry_delays_seconds=(1.0, 5.0, 30.0))
    assert [config.retry_delay(n) for n in range(1, 6)] == [1.0, 5.0, 30.0, 30.0, 30.0]
    assert config.retry_tiers == [1.0, 5.0, 30.0]  # one delay topic or queue each
    assert DeliveryConfig(max_retries=1, retry_delays_seconds=(1.0, 5.0)).retry_tiers == [1.0]
    default = DeliveryConfig()
    assert sum(default.retry_delay(n) for n in range(1, default.max_retries + 1)) >= 180


def batch_of(*events: Envelope) -> list[tuple[bytes, dict[str, str]]]:
    return [(event.to_bytes(), {}) for event in events]


async def test_a_batch_with_one_poison_event_applies_the_rest_exactly_once(
    db: Database,
) -> None:
    handler = Recorder(poison="t3")
    consumer = make_consumer(db, handler, max_retries=2)
    events = [vanished(f"t{n}") for n in range(1, 6)]
    await consumer.handle_batch(THINGS, batch_of(*events))
    await async_wait_until(lambda: count(db, DeadLetter), what="the poison's dead letter")
    letter = (await dead_letters(db))[0]
    assert (letter.event_id, letter.attempts) == (str(events[2].id), 3)
    async with db.sessions() as session:
        processed = set(await session.scalars(select(ProcessedEvent.event_id)))
    # 5 in: 4 applied once each (the rolled-back batch attempt left nothing), 1 dead letter.
    assert processed == {str(e.id) for e in events} - {str(events[2].id)}
    assert sorted(set(handler.applied)) == ["t1", "t2", "t4", "t5"]
    await consumer.handle_batch(THINGS, batch_of(*events))  # the batch redelivered
    assert await count(db, ProcessedEvent) == 4 and await count(db, DeadLetter) == 1


async def test_a_database_failure_mid_batch_loses_nothing_and_applies_nothing_twice(
    db: Database,
) -> None:
    class FailsOnce(Recorder):
        async def __call__(self, event: Envelope, session: AsyncSession) -> None:
            self.calls += 1
            if self.calls == 3:  # the third event of the first attempt: the database fails
                raise OperationalError("INSERT", {}, ConnectionError("server closed"))
            self.applied.append(event.data["thing_id"])

    handler = FailsOnce()
    consumer = make_consumer(db, handler)
    events = [vanished(f"t{n}") for n in range(1, 6)]
    await consumer.handle_batch(THINGS, batch_of(*events))
    async with db.sessions() as session:
        processed = sorted(await session.scalars(select(ProcessedEvent.event_id)))
    # 5 in, 5 inbox rows: the batch rolled back, then each event was applied alone (t1 and
    # t2 ran in the rolled-back attempt too, which left nothing).
    assert processed == sorted(str(e.id) for e in events)
    assert handler.applied == ["t1", "t2", "t1", "t2", "t3", "t4", "t5"]
    assert await count(db, DeadLetter) == 0


def numbered(thing_id: str, sequence: int) -> Envelope:
    event = vanished(thing_id) if sequence > 1 else happened(thing_id)
    return event.model_copy(update={"sequence": sequence})


async def test_an_aggregates_events_apply_in_sequence_order_whatever_the_arrival(
    db: Database,
) -> None:
    handler = Recorder()
    consumer = make_consumer(db, handler)
    seen: list[int] = []

    async def record_sequence(event: Envelope, session: AsyncSession) -> None:
        seen.append(event.sequence or 0)

    consumer.subscriptions.on_message(THINGS)(record_sequence)
    first, second, third = (numbered("t1", n) for n in (1, 2, 3))
    await consumer.handle(THINGS, first.to_bytes())
    # 3 arrives before 2: it goes to a delayed retry, and the stream goes on.
    await consumer.handle(THINGS, third.to_bytes())
    assert EVENTS_WAITING.labels(stream=THINGS)._value.get() > 0
    await consumer.handle(THINGS, second.to_bytes())
    await async_wait_until(lambda: asyncio.sleep(0, seen == [1, 2, 3]), what="3 after 2")
    # Within one batch, too: 3 before 2 of another aggregate apply in order.
    await consumer.handle_batch(
        THINGS, batch_of(numbered("t5", 1), numbered("t5", 3), numbered("t5", 2))
    )
    assert seen == [1, 2, 3, 1, 2, 3]
    # A stale copy of 2 is dropped.
    stale = numbered("t1", 2).model_copy(update={"id": uuid.uuid4()})
    await consumer.handle(THINGS, stale.to_bytes())
    assert seen == [1, 2, 3, 1, 2, 3]
    assert await count(db, DeadLetter) == 0


async def test_an_event_whose_predecessor_never_comes_is_parked(db: Database) -> None:
    handler = Recorder()
    consumer = make_consumer(db, handler, max_retries=2)
    await consumer.handle(THINGS, numbered("t9", 2).to_bytes())
    await async_wait_until(lambda: count(db, DeadLetter), what="the parked event")
    letter = (await dead_letters(db))[0]
    assert "waits for #1" in letter.error and letter.attempts == 3 and handler.calls == 0


async def test_an_envelope_without_an_id_is_dead_lettered_never_given_one(db: Database) -> None:
    handler = Recorder()
    body = happened().model_dump(mode="json")
    del body["id"]
    consumer = make_consumer(db, handler)
    for _ in range(2):  # delivered twice: no id is invented, so nothing is applied
        await consumer.handle(THINGS, json.dumps(body).encode())
    assert handler.calls == 0 and await count(db, ProcessedEvent) == 0
    async with db.sessions() as session:
        letters = (await session.scalars(select(DeadLetter))).all()
    assert [(letter.event_id, letter.attempts) for letter in letters] == [(None, 0), (None, 0)]
    assert all(letter.error.startswith("not an envelope: id: ") for letter in letters)
