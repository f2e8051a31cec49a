"""Emails leave after their notification commits, once each, whatever the deliveries do."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import USER_EVENTS
from contracts.testing import deliver
from eventkit import Envelope, new_event
from eventkit.testing import async_wait_until, running
from eventkit.transports.memory import MemoryConfig, MemoryTransport
from notification_service.main import create_app
from notification_service.sender import Message
from notification_service.settings import Settings


class RecordingSender:
    """Records what it sends; fails while `down` (an SMTP outage)."""

    channel = "email"

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.down = False

    async def send(self, message: Message) -> None:
        if self.down:
            raise ConnectionError("SMTP is down")
        self.sent.append(message)


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport(MemoryConfig(service="notification", retry_delays_seconds=(0.001,)))


def signup(user_id: str = "u1") -> Envelope:
    data = {"user_id": user_id, "name": "Ada", "email": f"{user_id}@example.com"}
    return new_event("UserCreated", data, source="user", aggregate_id=user_id)


@pytest.fixture
async def client(
    database_url: str, transport: MemoryTransport, sender: RecordingSender
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(DATABASE_URL=database_url), transport, sender)
    failures = {"left": 0}

    async def fail_after_recording(event: Envelope, session: AsyncSession) -> None:
        if event.data.get("user_id") == "flaky" and failures["left"] < 2:
            failures["left"] += 1
            raise RuntimeError("the commit of this transaction fails")

    # Runs after notification's own handler, in the same transaction.
    app.state.kit.consumer.subscriptions.on_message(USER_EVENTS)(fail_after_recording)
    async with running(app) as http:
        yield http


async def sent_to(sender: RecordingSender, address: str, count: int) -> list[Message]:
    async def arrived() -> list[Message]:
        return [m for m in sender.sent if m.to == address] if len(sender.sent) >= count else []

    return await async_wait_until(arrived, timeout=10, what=f"{count} email(s) to {address}")


async def test_a_failed_commit_sends_nothing_and_its_retry_sends_once(
    client: httpx.AsyncClient, transport: MemoryTransport, sender: RecordingSender
) -> None:
    await deliver(transport, signup("flaky"))  # two attempts fail, the third commits
    [welcome] = await sent_to(sender, "flaky@example.com", 1)
    assert welcome.subject == "Welcome, Ada!"
    await deliver(transport, signup("u2"))
    await sent_to(sender, "u2@example.com", 2)
    assert len(sender.sent) == 2  # the failed attempts sent nothing


async def test_two_concurrent_deliveries_of_one_event_send_one_email(
    client: httpx.AsyncClient, transport: MemoryTransport, sender: RecordingSender
) -> None:
    event = signup("twice")
    await asyncio.gather(deliver(transport, event), deliver(transport, event))
    await deliver(transport, signup("after"))
    await sent_to(sender, "after@example.com", 2)
    assert [m.to for m in sender.sent].count("twice@example.com") == 1
    assert len((await client.get("/notifications")).json()) == 2


async def test_emails_wait_out_an_smtp_outage_and_none_is_dead_lettered(
    client: httpx.AsyncClient, transport: MemoryTransport, sender: RecordingSender
) -> None:
    sender.down = True
    for n in range(3):
        await deliver(transport, signup(f"o{n}"))
    assert len((await client.get("/notifications")).json()) == 3  # recorded meanwhile
    sender.down = False
    await async_wait_until(
        lambda: asyncio.sleep(0, len(sender.sent) == 3), timeout=10, what="3 emails after SMTP"
    )
    assert sorted(m.to for m in sender.sent) == [f"o{n}@example.com" for n in range(3)]
    assert (await client.get("/dlq")).json() == []
