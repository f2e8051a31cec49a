"""The consumer: batches, inbox, handlers by type, delayed retries, dead letters (real DB)."""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, EventData, EventRegistry, EventType, Subscriptions, context
from eventkit.consumer import Consumer, DatabaseUnavailable
from eventkit.db import Database
from eventkit.dead_letters import DeadLetter
from eventkit.inbox import ProcessedEvent
from eventkit.metrics import EVENTS_HELD, EVENTS_WAITING
from eventkit.testing import async_wait_until, free_port
from eventkit.transports import DeliveryConfig
from eventkit.transports.memory import MemoryConfig, MemoryTransport
from sample_domain import (
    THINGS,
    DatabaseDown,
    Happened,
    Vanished,
    happened,
    things_registry,
    vanished,
)


class Recorder:
    """A handler that fails its first `failures` calls, its call number `fails_at`, and
    always for `poison` things; with `error`, a RuntimeError unless given.

    It records what it applied; a test's transaction may still roll that back, so tests
    that mind count inbox rows too.
    """

    def __init__(
        self,
        failures: int = 0,
        poison: str = "",
        fails_at: int = 0,
        error: Exception | None = None,
    ) -> None:
        self.failures, self.poison, self.fails_at, self.error = failures, poison, fails_at, error
        self.calls = 0
        self.applied: list[str] = []

    async def __call__(self, event: Envelope, session: AsyncSession) -> None:
        self.calls += 1
        fails = self.calls <= self.failures or self.calls == self.fails_at
        if fails or event.data["thing_id"] == self.poison:
            raise self.error or RuntimeError(f"boom {self.calls}")
        self.applied.append(event.data["thing_id"])


def make_consumer(
    db: Database,
    *handlers: Any,
    max_retries: int = 3,
    types: list[str] | None = None,
    registry: EventRegistry | None = None,
    transport: MemoryTransport | None = None,
    **config: Any,
) -> Consumer:
    """A `probe` consumer of THINGS; `config`: MemoryConfig fields beyond the retries."""
    subscriptions = Subscriptions()
    for handler in handlers:
        subscriptions.on_message(THINGS, types=types)(handler)
    if transport is None:
        config = {"retry_delays_seconds": (0.01,), **config}
        transport = MemoryTransport(
            MemoryConfig(service="probe", max_retries=max_retries, **config)
        )
        TRANSPORTS.append(transport)
    consumer = Consumer("probe", subscriptions, registry or things_registry(), db, transport)
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
    assert consumer.subscriptions.types(THINGS) == frozenset({"Happened"})


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


@pytest.mark.parametrize("header", ["\u00b2", "-1", "1e3", "\u0663", " 2", "9" * 40])
async def test_an_odd_attempts_header_counts_as_none_never_blocks_the_batch(
    db: Database, header: str
) -> None:
    """`²` and Arabic-Indic digits pass str.isdigit() but int() refuses or misreads them."""
    handler = Recorder(failures=1)
    consumer = make_consumer(db, handler)
    await consumer.handle(THINGS, vanished().to_bytes(), {"x-attempts": header})
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    assert [headers["x-attempts"] for _, _, headers, _ in transport.retries] == ["1"]
    await async_wait_until(lambda: asyncio.sleep(0, handler.applied == ["t1"]), what="the retry")


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
    # The third event of the first attempt: the database fails.
    handler = Recorder(
        fails_at=3, error=OperationalError("INSERT", {}, ConnectionError("server closed"))
    )
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
    await consumer.handle(THINGS, numbered("t9", 1).to_bytes())
    await consumer.handle(THINGS, numbered("t9", 3).to_bytes())
    await async_wait_until(lambda: count(db, DeadLetter), what="the parked event")
    letter = (await dead_letters(db))[0]
    assert "waits for #2" in letter.error and letter.attempts == 3 and handler.calls == 1


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


class Sequences:
    """A handler that records (aggregate, sequence) of what it applied; it fails the
    first try of the events listed in `fail_once`."""

    def __init__(self, fail_once: tuple[tuple[str, int], ...] = ()) -> None:
        self.applied: list[tuple[str, int]] = []
        self.fail_once = set(fail_once)

    async def __call__(self, event: Envelope, session: AsyncSession) -> None:
        key = (event.data["thing_id"], event.sequence or 0)
        if key in self.fail_once:
            self.fail_once.discard(key)
            raise RuntimeError(f"{key} fails once")
        self.applied.append(key)


async def test_an_aggregate_older_than_the_consumer_opens_at_its_first_event_seen(
    db: Database,
) -> None:
    """A service added later (or a database from before positions were kept) never sees
    the aggregate's first events: its later ones are applied, after a short wait."""
    handler = Sequences()
    # Tiers that grow, as in production: #7's waits for #6 outlast #6's commit, however slow
    # the machine (with two 0.01 s tiers #7 ran out first on a loaded CI).
    consumer = make_consumer(
        db,
        handler,
        max_retries=3,
        first_event_wait_seconds=0.3,
        retry_delays_seconds=(0.01, 0.5, 2.0),
    )
    started = time.monotonic()
    await consumer.handle(THINGS, numbered("old", 4).to_bytes())
    await consumer.handle(THINGS, numbered("old", 5).to_bytes())
    assert handler.applied == []  # #4 came first: earlier ones may still be on their way
    await async_wait_until(
        lambda: asyncio.sleep(0, handler.applied == [("old", 4), ("old", 5)]),
        what="#4 then #5 of an aggregate that predates the consumer",
    )
    assert time.monotonic() - started >= 0.3
    assert await count(db, DeadLetter) == 0
    # Its position stands now: a later gap waits, as always.
    await consumer.handle(THINGS, numbered("old", 7).to_bytes())
    await consumer.handle(THINGS, numbered("old", 6).to_bytes())
    await async_wait_until(lambda: asyncio.sleep(0, len(handler.applied) == 4))
    assert handler.applied[2:] == [("old", 6), ("old", 7)]


async def test_a_late_first_event_is_never_overtaken(db: Database) -> None:
    """#1 is in flight elsewhere (another replica) or in a retry: #2 seen first waits."""
    handler = Sequences(fail_once=(("retried", 1),))
    # Tiers that grow, as in production: #2's waits outlast #1's one retry, however slow the
    # machine (with equal tiers #2's third wait could come before #1's retry commits).
    consumer = make_consumer(
        db, handler, first_event_wait_seconds=0.2, retry_delays_seconds=(0.01, 0.5, 2.0)
    )
    # #2 first, #1 a moment later (a competing consumer's): #1 then #2.
    await consumer.handle(THINGS, numbered("elsewhere", 2).to_bytes())
    await consumer.handle(THINGS, numbered("elsewhere", 1).to_bytes())
    # #1 fails and waits in a retry; #2 comes meanwhile. #1 was seen, so #2 waits for it
    # however long its retries take (here: its first one).
    await consumer.handle(THINGS, numbered("retried", 1).to_bytes())
    await consumer.handle(THINGS, numbered("retried", 2).to_bytes())
    await async_wait_until(lambda: asyncio.sleep(0, len(handler.applied) == 4), timeout=10)
    assert [key for key in handler.applied if key[0] == "elsewhere"] == [
        ("elsewhere", 1),
        ("elsewhere", 2),
    ]
    assert [key for key in handler.applied if key[0] == "retried"] == [
        ("retried", 1),
        ("retried", 2),
    ]
    assert await count(db, DeadLetter) == 0


async def test_a_database_outage_longer_than_the_retry_schedule_dead_letters_nothing(
    database_url: str,
) -> None:
    """A database that is down is not a failing event: the batch goes back to the broker
    (after waiting a while for the database), spending no retry; nothing is dead-lettered."""
    db = DatabaseDown(database_url)
    await db.create_all()
    handler = Sequences()
    consumer = make_consumer(db, handler, max_retries=2, batch_hold_seconds=0.3)
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    batch = batch_of(numbered("a", 1), numbered("a", 2), vanished("b"))
    try:
        db.down = True
        started = time.monotonic()
        for _ in range(3):  # the broker delivers it again and again: ~1 s, the schedule 0.02 s
            with pytest.raises(DatabaseUnavailable):
                await consumer.handle_batch(THINGS, batch)
        assert time.monotonic() - started >= 0.9  # each delivery waited for the database
        assert (transport.retries, transport.dead_letters) == ([], [])
        assert db.refused > 3  # it kept asking
        # The database answers again while a delivery waits: that delivery applies.
        waiting = asyncio.create_task(consumer.handle_batch(THINGS, batch))
        await async_wait_until(lambda: asyncio.sleep(0, db.refused > 5))
        db.down = False
        await asyncio.wait_for(waiting, 10)
        assert sorted(handler.applied) == [("a", 1), ("a", 2), ("b", 0)]
        await consumer.handle_batch(THINGS, batch)  # and a late redelivery changes nothing
        assert len(handler.applied) == 3
        assert (transport.retries, transport.dead_letters) == ([], [])
        assert await count(db, DeadLetter) == 0
    finally:
        await db.dispose()


async def test_a_postgresql_server_that_does_not_answer_is_an_outage_not_a_failure() -> None:
    """A real connection refused (no server on the port): the driver's own error."""
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    consumer = make_consumer(db, Sequences(), batch_hold_seconds=0.2)
    try:
        with pytest.raises(DatabaseUnavailable, match="ConnectionRefusedError"):
            await consumer.handle(THINGS, vanished().to_bytes())
    finally:
        await db.dispose()
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    assert (transport.retries, transport.dead_letters) == ([], [])


async def test_a_handler_that_raises_a_connection_error_itself_is_retried_as_a_failure(
    db: Database,
) -> None:
    """While the database answers, a connection error that keeps coming is the event's."""
    handler = Recorder(poison="t1", error=ConnectionResetError("the handler's own HTTP call"))
    consumer = make_consumer(db, handler, max_retries=1)
    await consumer.handle(THINGS, vanished("t1").to_bytes())
    await async_wait_until(lambda: count(db, DeadLetter), what="its dead letter")
    letter = (await dead_letters(db))[0]
    assert "the handler's own HTTP call" in letter.error and letter.attempts == 2


class Renamed(EventData):
    thing_id: str
    new_name: str


def deployed_registry() -> EventRegistry:
    """The registry once consumers are deployed with the new type, and Vanished v2."""
    registry = EventRegistry(
        [
            EventType("Happened", THINGS, 1, Happened),
            EventType("Vanished", THINGS, 2, Vanished),
            EventType("Renamed", THINGS, 1, Renamed),
        ]
    )
    registry.upcaster("Vanished", 1)(dict)
    return registry


def of(event: Envelope, sequence: int, type: str | None = None, version: int = 1) -> bytes:
    changes = {"sequence": sequence, "version": version, "aggregate_id": event.data["thing_id"]}
    if type is not None:
        changes |= {"type": type, "data": {"thing_id": event.data["thing_id"], "new_name": "N"}}
    return event.model_copy(update=changes).to_bytes()


async def test_a_new_event_type_published_first_is_held_and_its_aggregate_waits(
    db: Database,
) -> None:
    """A publisher deployed before its consumers: its new type is listed in the dead letters
    with the reason (as the contract says) and held, not dead-lettered for good; the
    aggregate's later events wait with it, and the next deploy applies all in order and
    clears the list."""
    handler = Sequences()
    consumer = make_consumer(db, handler, max_retries=1, unknown_event_hold_seconds=60)
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    held_before = EVENTS_HELD.labels(stream=THINGS, type="Renamed")._value.get()
    await consumer.handle(THINGS, of(happened("n"), 1))
    await consumer.handle(THINGS, of(happened("n"), 2, type="Renamed"), {"event-type": "Renamed"})
    await consumer.handle(THINGS, of(vanished("n"), 3))
    await consumer.handle(THINGS, of(vanished("n"), 4, version=2))  # a newer version
    # Round after round (each at the longest retry delay), with no retry spent.
    await async_wait_until(
        lambda: asyncio.sleep(0, len(transport.retries) >= 20), what="many rounds held"
    )
    assert handler.applied == [("n", 1)]
    async with db.sessions() as session:
        listed = {row.event_type: row.error for row in await session.scalars(select(DeadLetter))}
    assert listed.keys() == {"Renamed", "Vanished"}, listed
    assert listed["Renamed"].startswith("unknown event type 'Renamed'; held: retried every")
    assert "version 2" in listed["Vanished"] and "; held: " in listed["Vanished"]
    assert transport.dead_letters == []  # not for good: the broker's dead letters are empty
    assert {headers.get("x-attempts") for _, _, headers, _ in transport.retries} == {None}
    assert EVENTS_HELD.labels(stream=THINGS, type="Renamed")._value.get() > held_before
    # The consumer is deployed with the new type and version: what waited applies, in order.
    # Its retries are a deploy's, not one: what waited comes back in any order (#4 before
    # #3 waits as a failure does once the hold lifts; one retry lost it on a busy machine).
    transport.config.max_retries = 50
    make_consumer(db, handler, registry=deployed_registry(), transport=transport)
    await async_wait_until(lambda: asyncio.sleep(0, len(handler.applied) == 4))
    assert handler.applied == [("n", 1), ("n", 2), ("n", 3), ("n", 4)]

    async def listed_none() -> bool:  # (the handler runs before its transaction commits)
        return await count(db, DeadLetter) == 0

    await async_wait_until(listed_none, what="the list cleared with the apply")


async def test_an_event_held_past_the_hold_is_dead_lettered_with_the_reason(
    db: Database,
) -> None:
    consumer = make_consumer(db, Sequences(), unknown_event_hold_seconds=0.2)
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    await consumer.handle(THINGS, of(happened("m"), 1, type="Renamed"))
    [listed] = await dead_letters(db)  # at once, marked held
    assert listed.error.startswith("unknown event type 'Renamed'; held: retried every ")

    async def for_good() -> list[DeadLetter] | None:  # the broker's first, then the list
        letters = await dead_letters(db)
        return letters if transport.dead_letters and "; held: " not in letters[0].error else None

    [letter] = await async_wait_until(for_good, what="the dead letter for good")
    assert letter.error.startswith("unknown event type 'Renamed'; held ")
    assert "deploy this service" in letter.error and letter.attempts == 0


async def second_and_third_dead_lettered(db: Database, transport: MemoryTransport) -> None:
    """Once #2 and #3 are dead letters for good (none held; the broker's first, then the
    list): #2 for its bug, #3 for waiting on #2."""

    async def both_for_good() -> dict[int, str] | None:
        letters = {json.loads(row.payload)["sequence"]: row.error for row in await dead_letters(db)}
        listed = letters.keys() == {2, 3} and all("; held" not in e for e in letters.values())
        return letters if len(transport.dead_letters) == 2 and listed else None

    letters = await async_wait_until(both_for_good, timeout=10, what="#2 and #3 dead-lettered")
    assert "a bug on #2" in letters[2] and "waits for #2" in letters[3]


class BugOnSecond(Sequences):
    """Each aggregate's #2 fails, every time: a bug."""

    async def __call__(self, event: Envelope, session: AsyncSession) -> None:
        if event.sequence == 2:
            raise RuntimeError("a bug on #2")
        await super().__call__(event, session)


async def first_applied(db: Database, key: str) -> tuple[BugOnSecond, Consumer, MemoryTransport]:
    """`key`'s #1 applied by a consumer that knows v1 only, holding what it does not know."""
    handler = BugOnSecond()
    consumer = make_consumer(db, handler, max_retries=1, unknown_event_hold_seconds=60)
    assert isinstance(consumer.transport, MemoryTransport)
    await consumer.handle(THINGS, of(happened(key), 1))
    return handler, consumer, consumer.transport


async def test_a_held_event_known_at_last_waits_as_any_other_event(db: Database) -> None:
    """Found by the simulation (seed 300226): the hold of an event not known yet outlived
    its reason. Once a deploy knows the event, a hold left on its aggregate put it off
    without spending retries for the whole hold (a day by default) behind an earlier
    event that was poison, where it must wait as any event does, then be dead-lettered."""

    handler, consumer, transport = await first_applied(db, "h")
    await consumer.handle(THINGS, of(vanished("h"), 3, version=2))  # held: v2 is not known
    deployed = make_consumer(db, handler, registry=deployed_registry(), transport=transport)
    await deployed.handle(THINGS, of(vanished("h"), 2))  # poison: retried, dead-lettered

    await second_and_third_dead_lettered(db, transport)
    assert handler.applied == [("h", 1)]


async def test_a_held_event_that_fails_once_known_lifts_its_hold(db: Database) -> None:
    """Found by the simulation (seed 14001410): #2, of a version not known yet, was held; a
    deploy knew it, and then it failed on a bug and was dead-lettered. Its hold stayed, so
    #3 was put off for the rest of the hold (a day) instead of waiting as for any failure."""

    handler, consumer, transport = await first_applied(db, "k")
    await consumer.handle(THINGS, of(vanished("k"), 2, version=2))  # held: v2 is not known
    await consumer.handle(THINGS, of(vanished("k"), 3))  # waits for the hold
    make_consumer(db, handler, registry=deployed_registry(), transport=transport)

    await second_and_third_dead_lettered(db, transport)
    assert handler.applied == [("k", 1)]


class FieldsAtEmit(logging.Handler):
    """Each log line with the event fields a JSON line would carry (read as it is written)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, dict[str, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), context.log_fields()))


async def test_an_undecodable_message_is_not_logged_as_the_event_before_it(db: Database) -> None:
    """An operator follows a dead letter's log line by its event id: a message that is not
    JSON has none, and must not carry the id of the event handled before it."""
    consumer = make_consumer(db, Recorder())
    lines, logger = FieldsAtEmit(), logging.getLogger("eventkit.consumer")
    logger.addHandler(lines)
    try:
        await consumer.handle(THINGS, happened("g").to_bytes())
        await consumer.handle(THINGS, b"not json at all")
    finally:
        logger.removeHandler(lines)
    [(message, fields)] = [line for line in lines.lines if line[0].startswith("dead-lettering")]
    assert message.startswith(f"dead-lettering a message of {THINGS}: not valid JSON"), message
    assert fields == {}


async def test_a_type_no_handler_takes_is_passed_over_unread(db: Database) -> None:
    """Kafka has no routing by type: a consumer that names its types reads the
    `event-type` header first, and never parses (nor dead-letters) what it does not take."""
    handler = Recorder()
    consumer = make_consumer(db, handler, types=["Happened"])
    unknown = happened("u").model_copy(update={"type": "Exploded"}).to_bytes()
    await consumer.handle(THINGS, unknown, {"event-type": "Exploded"})
    await consumer.handle(THINGS, unknown)  # no header: decoded, and not taken either
    await consumer.handle(THINGS, b"not json at all", {"event-type": "Vanished"})
    bad_vanished = vanished("v").model_copy(update={"data": {"nope": 1}}).to_bytes()
    await consumer.handle(THINGS, bad_vanished)  # invalid, but of a type it does not take
    await consumer.handle(THINGS, happened("h").to_bytes(), {"event-type": "Happened"})
    assert handler.applied == ["h"]
    assert await count(db, DeadLetter) == 0
    transport = consumer.transport
    assert isinstance(transport, MemoryTransport)
    assert transport.retries == []
