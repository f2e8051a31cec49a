"""The outbox relay publishes committed events in order, and keeps them while the broker is down."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from eventkit import Envelope, add_to_outbox, insert_into_outbox
from eventkit.db import Database
from eventkit.outbox import OutboxMessage, OutboxRelay
from eventkit.testing import async_wait_until
from eventkit.transports import Outcome, Outgoing, publish_per_key
from eventkit.transports.memory import MemoryTransport
from sample_domain import THINGS, happened

POSTGRES = os.environ.get("TEST_POSTGRES_URL")


async def stage(db: Database, *events: Envelope) -> None:
    async with db.transaction() as session:
        for item in events:
            add_to_outbox(session, THINGS, item)


async def stage_in_one_statement(db: Database, *events: Envelope) -> None:
    async with db.transaction() as session:
        await insert_into_outbox(session, THINGS, events)


@pytest.mark.parametrize("staged_by", [stage, stage_in_one_statement])
async def test_relay_publishes_in_commit_order_and_marks_sent(
    db: Database, staged_by: Callable[..., Awaitable[None]]
) -> None:
    transport = MemoryTransport()
    events = [happened(note=f"n{n}") for n in range(5)]
    await staged_by(db, *events[:2])
    await staged_by(db, *events[2:])
    relay = OutboxRelay(db, transport)
    assert await relay.publish_pending() == 5
    assert await relay.publish_pending() == 0
    assert [Envelope.from_bytes(body).id for _, body in transport.published] == [
        e.id for e in events
    ]
    assert {stream for stream, _ in transport.published} == {THINGS}
    async with db.sessions() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert all(row.sent_at for row in rows)
    assert {row.key for row in rows} == {"t1"}  # the aggregate id is the partition key


async def test_events_resent_after_an_outage_are_sent_once_more_and_counted(db: Database) -> None:
    transport = MemoryTransport()
    await stage(db, *[happened(note=f"n{n}") for n in range(3)])
    relay = OutboxRelay(db, transport)
    assert await relay.publish_pending() == 3
    counted = REGISTRY.get_sample_value("eventkit_events_resent_total") or 0.0
    assert await relay.resend_since(datetime.now(UTC) - timedelta(minutes=1)) == 3
    assert await relay.publish_pending() == 3
    assert notes(transport) == ["n0", "n1", "n2"] * 2
    assert REGISTRY.get_sample_value("eventkit_events_resent_total") == counted + 3


def notes(transport: MemoryTransport) -> list[str]:
    return [Envelope.from_bytes(body).data["note"] for _, body in transport.published]


async def pending_notes(db: Database) -> list[str]:
    async with db.sessions() as session:
        bodies = await session.scalars(
            select(OutboxMessage.body)
            .where(OutboxMessage.sent_at.is_(None))
            .order_by(OutboxMessage.position)
        )
        return [Envelope.from_bytes(body.encode()).data["note"] for body in bodies]


class RefusesOnce(MemoryTransport):
    """Refuses the first publish of the event noted `note`, as a broker outage would."""

    def __init__(self, note: str) -> None:
        super().__init__()
        self.note = note

    async def publish(self, message: Outgoing) -> None:
        if Envelope.from_bytes(message.body).data["note"] == self.note:
            self.note = ""
            raise ConnectionError("refused")
        await super().publish(message)


async def test_a_failed_publish_keeps_the_rest_of_its_key_pending_and_sends_the_others(
    db: Database,
) -> None:
    transport = RefusesOnce("a2")
    await stage(db, *[happened(key, note=f"{key}{n}") for n in (1, 2, 3) for key in "ab"])
    relay = OutboxRelay(db, transport)
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert notes(transport) == ["a1", "b1", "b2", "b3"]
    assert await pending_notes(db) == ["a2", "a3"]  # a3 waits behind a2: a's order holds
    assert await relay.publish_pending() == 2
    assert notes(transport)[4:] == ["a2", "a3"]
    assert await pending_notes(db) == []


class HangsOnce(MemoryTransport):
    """Publishes with many in flight, like a broker client; one publish never confirms."""

    def __init__(self, note: str) -> None:
        super().__init__()
        self.note = note

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        async def publish(message: Outgoing) -> None:
            if Envelope.from_bytes(message.body).data["note"] == self.note:
                self.note = ""
                await asyncio.Event().wait()
            await self.publish(message)

        return await publish_per_key(publish, messages, timeout)


async def test_a_publish_that_never_confirms_fails_after_the_timeout_and_is_sent_again(
    db: Database,
) -> None:
    transport = HangsOnce("b1")
    await stage(db, *[happened(key, note=f"{key}{n}") for n in (1, 2) for key in "abc"])
    relay = OutboxRelay(db, transport, publish_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await relay.publish_pending()
    assert time.monotonic() - started < 5
    assert sorted(notes(transport)) == ["a1", "a2", "c1", "c2"]
    assert await pending_notes(db) == ["b1", "b2"]
    assert await relay.publish_pending() == 2
    assert notes(transport)[4:] == ["b1", "b2"]


async def test_each_key_is_published_in_order_and_the_keys_at_once() -> None:
    """publish_per_key: a key's messages one after another, every key concurrently."""
    calls: list[str] = []
    in_flight, most_in_flight = 0, 0

    async def publish(message: Outgoing) -> None:
        nonlocal in_flight, most_in_flight
        name = message.body.decode()
        calls.append(name)
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await asyncio.sleep(0.01 * (3 - int(name[1])))  # later ones confirm sooner
            if name == "b2":
                raise ConnectionError("returned")
        finally:
            in_flight -= 1

    names = ["a1", "b1", "a2", "b2", "c1", "a3", "b3", "c2", "x1", "x2"]
    messages = [
        Outgoing(stream=THINGS, body=n.encode(), key="" if n[0] == "x" else n[0], event_type="T")
        for n in names
    ]
    outcomes = dict(zip(names, await publish_per_key(publish, messages, 5.0), strict=True))
    for key in "abc":
        assert [c for c in calls if c[0] == key] == sorted(c for c in calls if c[0] == key)
    assert "b3" not in calls  # b stopped at its failure
    assert isinstance(outcomes.pop("b2"), ConnectionError)
    assert isinstance(outcomes.pop("b3"), ConnectionError)
    assert set(outcomes.values()) == {None}
    assert most_in_flight == 5  # a, b, c and the two keyless ones at once


async def test_rows_wait_while_the_broker_is_down(db: Database) -> None:
    transport = MemoryTransport()
    await transport.stop()
    await stage(db, happened())
    relay = OutboxRelay(db, transport)
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    await transport.start()
    assert await relay.publish_pending() == 1
    assert len(transport.published) == 1


class LeadUntilTold:
    """A leadership that holds until `lose()`; counts how often it was asked."""

    def __init__(self) -> None:
        self.leads = True
        self.asked_after_loss = 0

    def lose(self) -> None:
        self.leads = False

    async def held(self) -> bool:
        if not self.leads:
            self.asked_after_loss += 1
        return self.leads

    async def release(self) -> None:
        return None


async def test_a_relay_that_loses_its_lock_mid_backlog_stops_publishing(db: Database) -> None:
    """Another replica may hold the lock by now: publishing on would send rows twice and
    out of order."""
    leadership = LeadUntilTold()

    class LosesTheLockAfterOneBatch(MemoryTransport):
        async def publish_batch(
            self, messages: Sequence[Outgoing], *, timeout: float
        ) -> list[Outcome]:
            outcomes = await super().publish_batch(messages, timeout=timeout)
            if len(self.published) == 2:
                leadership.lose()  # e.g. its lock connection dropped meanwhile
            return outcomes

    transport = LosesTheLockAfterOneBatch()
    await stage(db, *(happened(f"t{n}", note=str(n)) for n in range(6)))
    relay = OutboxRelay(db, transport, poll_seconds=0.02, batch_size=2)
    relay.leadership = leadership  # type: ignore[assignment]
    relay.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, leadership.asked_after_loss >= 3),
            what="the relay to ask for the lead a few times after losing it",
        )
        assert notes(transport) == ["0", "1"]  # the batch in flight, and no more
        leadership.leads = True  # the lead comes back: the rest follows, in order
        await async_wait_until(lambda: asyncio.sleep(0, len(transport.published) == 6))
        assert notes(transport) == [str(n) for n in range(6)]
    finally:
        await relay.stop()


@pytest.mark.skipif(not POSTGRES, reason="replicas share a PostgreSQL database")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_relays_on_one_database_publish_each_row_once(database_url: str) -> None:
    dbs = [Database(database_url) for _ in range(2)]
    await dbs[0].create_all()
    transport = MemoryTransport()
    relays = [OutboxRelay(db, transport, poll_seconds=0.05) for db in dbs]
    try:
        for relay in relays:
            relay.start()
        events = [happened(f"t{n % 7}", note=str(n)) for n in range(200)]
        for start in range(0, 200, 20):
            await stage(dbs[start // 20 % 2], *events[start : start + 20])
            for relay in relays:
                relay.wake()
        await async_wait_until(
            lambda: asyncio.sleep(0, len(transport.published) >= 200),
            timeout=30,
            what="200 events published",
        )
        published = [Envelope.from_bytes(body).id for _, body in transport.published]
        assert sorted(map(str, published)) == sorted(str(e.id) for e in events)  # each once
        assert published == [e.id for e in events]  # and in commit order
        assert sum([await relay.leadership.held() for relay in relays]) == 1
    finally:
        for relay in relays:
            await relay.stop()
        for db in dbs:
            await db.dispose()
