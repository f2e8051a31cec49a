"""The consumer: inbox, handlers by type, retries with backoff, dead letters; on a real database."""

import asyncio
import json
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, Subscriptions
from eventkit.consumer import Consumer, RetryPolicy
from eventkit.db import Database
from eventkit.dead_letters import DeadLetter
from eventkit.inbox import ProcessedEvent
from eventkit.metrics import EVENTS_WAITING
from eventkit.testing import async_wait_until
from eventkit.transports.memory import MemoryTransport
from sample_domain import THINGS, happened, things_registry, vanished


class Recorder:
    """A handler that fails its first `failures` calls, then records what it saw."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.applied: list[str] = []

    async def __call__(self, event: Envelope, session: AsyncSession) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"boom {self.calls}")
        self.applied.append(event.data["thing_id"])


def make_consumer(
    db: Database, *handlers: Recorder, max_retries: int = 3, types: list[str] | None = None
) -> Consumer:
    subscriptions = Subscriptions()
    for handler in handlers:
        subscriptions.on_message(THINGS, types=types)(handler)
    retry = RetryPolicy(max_retries, 0.001, 0.01)
    return Consumer("probe", subscriptions, things_registry(), db, MemoryTransport(), retry)


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


async def test_a_failing_handler_is_retried_then_succeeds(db: Database) -> None:
    handler = Recorder(failures=2)
    await make_consumer(db, handler).handle(THINGS, vanished().to_bytes())
    assert handler.calls == 3
    assert handler.applied == ["t1"]
    assert await count(db, DeadLetter) == 0


async def test_a_poison_event_is_dead_lettered_with_its_key(db: Database) -> None:
    handler = Recorder(failures=4)  # the first event's 1 try + 3 retries all fail
    consumer = make_consumer(db, handler, max_retries=3)
    poison = vanished("poison")
    await consumer.handle(THINGS, poison.to_bytes())
    await consumer.handle(THINGS, vanished("next").to_bytes())
    assert handler.applied == ["next"]
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
        processed = set(await session.scalars(select(ProcessedEvent.event_id)))
    assert (letter.event_id, letter.attempts, letter.stream) == (str(poison.id), 4, THINGS)
    assert letter.key == "poison"  # the aggregate id it was published with
    assert "boom 4" in letter.error
    assert str(poison.id) not in processed  # its failed attempts left no trace


async def test_a_malformed_message_goes_straight_to_the_dead_letters(db: Database) -> None:
    handler = Recorder()
    await make_consumer(db, handler).handle(THINGS, b"\x00not json")
    assert handler.calls == 0
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert (letter.attempts, letter.key) == (0, "")
    assert letter.error.startswith("not valid JSON")


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_retries=10, base_seconds=0.1, max_seconds=1.0)
    assert all(0 <= policy.delay(1) <= 0.1 for _ in range(50))
    assert all(0 <= policy.delay(8) <= 1.0 for _ in range(50))
    assert max(policy.delay(4) for _ in range(200)) > 0.1  # grows past the base


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
    # 3 arrives before 2: it waits (without failing) until 2 is applied.
    waiting = asyncio.create_task(consumer.handle(THINGS, third.to_bytes()))
    await async_wait_until(
        lambda: asyncio.sleep(0, EVENTS_WAITING.labels(stream=THINGS)._value.get() > 0),
        what="the third event to wait for the second",
    )
    await consumer.handle(THINGS, second.to_bytes())
    await waiting
    assert seen == [1, 2, 3]
    # Another aggregate is not held up by t1's, and a stale copy of 2 is dropped.
    await consumer.handle(THINGS, numbered("t2", 1).to_bytes())
    stale = numbered("t1", 2).model_copy(update={"id": uuid.uuid4()})
    await consumer.handle(THINGS, stale.to_bytes())
    assert seen == [1, 2, 3, 1]
    assert await count(db, DeadLetter) == 0


async def test_an_event_whose_predecessor_never_comes_is_parked(db: Database) -> None:
    handler = Recorder()
    subscriptions = Subscriptions()
    subscriptions.on_message(THINGS)(handler)
    retry = RetryPolicy(3, 0.001, 0.01, order_wait_seconds=0.05)
    consumer = Consumer("probe", subscriptions, things_registry(), db, MemoryTransport(), retry)
    await consumer.handle(THINGS, numbered("t9", 2).to_bytes())
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert "waits for #1" in letter.error and handler.calls == 0


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
