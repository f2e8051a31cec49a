"""The outbox relay publishes committed events in order, and keeps them while the broker is down."""

import asyncio
import os

import pytest
from sqlalchemy import select

from eventkit import Envelope, add_to_outbox
from eventkit.db import Database
from eventkit.outbox import OutboxMessage, OutboxRelay
from eventkit.testing import async_wait_until
from eventkit.transports.memory import MemoryTransport
from sample_domain import THINGS, happened

POSTGRES = os.environ.get("TEST_POSTGRES_URL")


async def stage(db: Database, *events: Envelope) -> None:
    async with db.transaction() as session:
        for item in events:
            add_to_outbox(session, THINGS, item)


async def test_relay_publishes_in_commit_order_and_marks_sent(db: Database) -> None:
    transport = MemoryTransport()
    events = [happened(note=f"n{n}") for n in range(5)]
    await stage(db, *events[:2])
    await stage(db, *events[2:])
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
