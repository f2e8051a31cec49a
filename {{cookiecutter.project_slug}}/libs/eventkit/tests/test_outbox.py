"""The outbox relay publishes committed events in order, and keeps them while the broker is down."""

import pytest
from sqlalchemy import select

from eventkit import Envelope, add_to_outbox, new_event
from eventkit.bus import InProcessTransport
from eventkit.db import Database
from eventkit.outbox import OutboxMessage, OutboxRelay


async def stage(db: Database, *events: Envelope) -> None:
    async with db.transaction() as session:
        for item in events:
            add_to_outbox(session, item, key=item.data["user_id"])


def renamed(n: int) -> Envelope:
    return new_event("NameChanged", {"user_id": "u1", "new_name": f"n{n}"}, source="test")


async def test_relay_publishes_in_commit_order_and_marks_sent(db: Database) -> None:
    transport = InProcessTransport()
    events = [renamed(n) for n in range(5)]
    await stage(db, *events[:2])
    await stage(db, *events[2:])
    relay = OutboxRelay(db, transport)
    assert await relay.publish_pending() == 5
    assert await relay.publish_pending() == 0
    assert [Envelope.from_bytes(body).id for _, body in transport.published] == [
        e.id for e in events
    ]
    assert {stream for stream, _ in transport.published} == {"user.events"}
    async with db.sessions() as session:
        assert all(row.sent_at for row in await session.scalars(select(OutboxMessage)))


async def test_rows_wait_while_the_broker_is_down(db: Database) -> None:
    transport = InProcessTransport()
    await transport.stop()
    await stage(db, renamed(1))
    relay = OutboxRelay(db, transport)
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    await transport.start()
    assert await relay.publish_pending() == 1
    assert len(transport.published) == 1


async def test_an_event_outside_the_registry_cannot_be_staged(db: Database) -> None:
    with pytest.raises(KeyError):
        await stage(db, new_event("Unknown", {"user_id": "u"}, source="test"))
