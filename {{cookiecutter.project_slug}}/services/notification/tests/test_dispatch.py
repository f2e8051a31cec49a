"""Emails leave after their notification commits, once each, whatever the deliveries do."""

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import USER_EVENTS
from contracts.testing import deliver
from eventkit import Envelope, new_event
from eventkit import rebuild as rebuild_module
from eventkit.testing import async_wait_until, running
from eventkit.transports.memory import MemoryConfig, MemoryTransport
from notification_service.main import create_app
from notification_service.sender import Message, SmtpSender
from notification_service.settings import Settings

POSTGRES = os.environ.get("TEST_POSTGRES_URL")


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


def user_feed(monkeypatch: pytest.MonkeyPatch, events: list[Envelope]) -> None:
    """What a rebuild reads: `events` on the user feed, nothing on billing's."""
    monkeypatch.setenv("USER_URL", "http://user.test")
    monkeypatch.setenv("BILLING_URL", "http://billing.test")

    async def pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if url.startswith("http://user.test"):
            yield [
                {"position": n, "stream": USER_EVENTS, "event": e.model_dump(mode="json")}
                for n, e in enumerate(events, start=1)
            ]

    monkeypatch.setattr(rebuild_module, "feed_pages", pages)


async def listed(client: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    [notification] = (await client.get("/notifications", params={"user_id": user_id})).json()
    return dict(notification)


async def test_a_rebuild_keeps_what_was_sent_and_still_sends_what_was_not(
    database_url: str,
    transport: MemoryTransport,
    sender: RecordingSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent, waiting, unseen = signup("s1"), signup("w1"), signup("o1")
    app = create_app(Settings(DATABASE_URL=database_url), transport, sender)
    async with running(app) as client:
        await deliver(transport, sent)
        await sent_to(sender, "s1@example.com", 1)
        sender.down = True
        await deliver(transport, waiting)  # recorded; its email waits for SMTP
        # o1's event was still in a retry or the dead letters: only the feed has it.
        user_feed(monkeypatch, [sent, waiting, unseen])
        rebuilt = await client.post("/admin/rebuild")
        assert rebuilt.status_code == 200, rebuilt.text
        sender.down = False
        await sent_to(sender, "w1@example.com", 2)
        await sent_to(sender, "o1@example.com", 3)
        for late in (unseen, waiting):  # live deliveries after the rebuild: duplicates
            await deliver(transport, late)
        await deliver(transport, signup("after"))
        await sent_to(sender, "after@example.com", 4)
        assert sorted(m.to for m in sender.sent) == [
            f"{name}@example.com" for name in ("after", "o1", "s1", "w1")
        ]
        assert {(await listed(client, u))["delivery"] for u in ("s1", "w1", "o1")} == {"sent"}


def emails(outcome: str) -> float:
    return REGISTRY.get_sample_value("notification_emails_total", {"outcome": outcome}) or 0.0


async def test_a_refused_recipient_is_failed_with_the_reason_and_the_others_are_sent(
    database_url: str, transport: MemoryTransport, smtp: Any
) -> None:
    smtp.replies["r0@example.com"] = "550 5.1.1 <r0@example.com>: no such mailbox"
    smtp_sender = SmtpSender("127.0.0.1", smtp.port, "from@example.com")
    refused_before, sent_before = emails("refused"), emails("sent")
    app = create_app(Settings(DATABASE_URL=database_url), transport, smtp_sender)
    async with running(app) as client:
        for n in range(4):  # the refused one is the oldest, so first in line
            await deliver(transport, signup(f"r{n}"))

        async def three_arrived() -> bool:
            return len(smtp.received) == 3

        await async_wait_until(three_arrived, timeout=10, what="the 3 accepted emails")
        assert sorted(m["To"] for m in smtp.received) == [f"r{n}@example.com" for n in (1, 2, 3)]
        refused = await listed(client, "r0")
        assert refused["delivery"] == "failed" and refused["sent_at"] is None
        assert "550" in refused["failure"] and "no such mailbox" in refused["failure"]
        assert (await listed(client, "r1"))["delivery"] == "sent"
        assert (await listed(client, "r1"))["failure"] is None
    assert (emails("refused") - refused_before, emails("sent") - sent_before) == (1, 3)


async def test_a_temporary_refusal_waits_and_is_sent_once_accepted(
    database_url: str, transport: MemoryTransport, smtp: Any
) -> None:
    smtp.replies["g1@example.com"] = "451 4.7.1 greylisted, try again later"
    smtp_sender = SmtpSender("127.0.0.1", smtp.port, "from@example.com")
    app = create_app(Settings(DATABASE_URL=database_url), transport, smtp_sender)
    async with running(app) as client:
        await deliver(transport, signup("g1"))

        async def tried() -> bool:
            return "g1@example.com" in smtp.recipients

        await async_wait_until(tried, timeout=10, what="a first attempt")
        assert (await listed(client, "g1"))["delivery"] == "waiting"
        del smtp.replies["g1@example.com"]

        # The server takes the email before the dispatcher's commit marks it sent.
        async def marked_sent() -> bool:
            return bool((await listed(client, "g1"))["delivery"] == "sent")

        await async_wait_until(marked_sent, timeout=10, what="the email, once accepted")
        assert len(smtp.to("g1@example.com")) == 1


class CrashingSender(RecordingSender):
    """The process stops (its task is cancelled) as it is about to send the `crash_at`-th."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.calls, self.crash_at = 0, crash_at

    async def send(self, message: Message) -> None:
        self.calls += 1
        if self.calls == self.crash_at:
            raise asyncio.CancelledError
        await super().send(message)


async def test_each_email_is_marked_sent_as_it_leaves_so_a_crash_resends_none(
    database_url: str, transport: MemoryTransport
) -> None:
    crashing = CrashingSender(crash_at=3)
    app = create_app(Settings(DATABASE_URL=database_url), transport, crashing)
    async with running(app):
        [dispatcher] = app.state.kit.workers
        await dispatcher.stop()  # driven by hand below
        for n in range(5):
            await deliver(transport, signup(f"c{n}"))
        with pytest.raises(asyncio.CancelledError):
            await dispatcher.send_pending()  # two emails leave, then the crash
        while await dispatcher.send_pending():  # the restarted process
            pass
    assert sorted(m.to for m in crashing.sent) == [f"c{n}@example.com" for n in range(5)]


class SlowSender(RecordingSender):
    """Takes a moment per email, so two replicas' dispatchers overlap; records in `sent`."""

    def __init__(self, sent: list[Message]) -> None:
        super().__init__()
        self.sent = sent

    async def send(self, message: Message) -> None:
        await asyncio.sleep(0.01)
        await super().send(message)


@pytest.mark.skipif(not POSTGRES, reason="replicas share a PostgreSQL database")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_send_each_email_once(
    database_url: str, transport: MemoryTransport
) -> None:
    sent: list[Message] = []
    settings = Settings(DATABASE_URL=database_url)
    first = create_app(settings, transport, SlowSender(sent))
    second = create_app(settings, MemoryTransport(), SlowSender(sent))
    async with running(first) as client, running(second):
        for n in range(30):
            await deliver(transport, signup(f"r{n}"))

        async def all_sent() -> bool:
            listed = (await client.get("/notifications", params={"limit": 100})).json()
            return len(listed) == 30 and {n["delivery"] for n in listed} == {"sent"}

        await async_wait_until(all_sent, timeout=20, what="30 emails marked sent")
    assert sorted(m.to for m in sent) == sorted(f"r{n}@example.com" for n in range(30))
