"""The outbox relay publishes committed events in order, and keeps them while the broker is down."""

import pytest
from sqlalchemy import select

from eventkit import Envelope, add_to_outbox
from eventkit.db import Database
from eventkit.outbox import OutboxMessage, OutboxRelay
from eventkit.transports.memory import MemoryTransport
from sample_domain import THINGS, happened


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
