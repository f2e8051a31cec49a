"""Dead letters, their replay, rebuilds and the admin token, on a small service of its own."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import String, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import (
    Envelope,
    InvalidEvent,
    ServiceSettings,
    Subscriptions,
    add_to_outbox,
    create_service,
    new_event,
    pause,
)
from eventkit import rebuild as rebuild_module
from eventkit.db import Base
from eventkit.dead_letters import DeadLetter
from eventkit.inbox import ProcessedEvent
from eventkit.outbox import OutboxMessage
from eventkit.testing import async_wait_until, deliver, running
from eventkit.transports.memory import MemoryConfig, MemoryTransport
from sample_domain import THINGS, happened, things_roster, vanished


class Seen(Base):
    __tablename__ = "test_admin_seen"

    thing_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(50))


class Settings(ServiceSettings):
    SERVICE_NAME: str = "probe"
    PORT: int = 9999
    RETRY_DELAYS_SECONDS: tuple[float, ...] = (0.001,)


class Switch:
    def __init__(self) -> None:
        self.broken: set[str] = set()  # things whose events the handler fails on


def build(settings: Settings, transport: MemoryTransport, switch: Switch) -> Any:
    subscriptions = Subscriptions(read_models=[Seen])

    @subscriptions.on_message(THINGS)
    async def on_thing(event: Envelope, session: AsyncSession) -> None:
        if event.data["thing_id"] in switch.broken:
            raise RuntimeError("handler is broken")
        row = await session.get(Seen, event.data["thing_id"])
        if row is None:
            session.add(Seen(thing_id=event.data["thing_id"], type=event.type))
        else:
            row.type = event.type

    return create_service(
        settings,
        things_roster("probe"),
        title="probe",
        subscriptions=subscriptions,
        transport=transport,
    )


@pytest.fixture
def transport() -> MemoryTransport:
    """The transport's config governs retries: 2 retries, so 3 attempts in all."""
    return MemoryTransport(
        MemoryConfig(service="probe", max_retries=2, retry_delays_seconds=(0.001,))
    )


@pytest.fixture
def switch() -> Switch:
    return Switch()


@pytest.fixture
async def probe(
    database_url: str, transport: MemoryTransport, switch: Switch
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(build(Settings(DATABASE_URL=database_url), transport, switch)) as client:
        yield client


async def seen(client: httpx.AsyncClient) -> dict[str, str]:
    app = client._transport.app  # type: ignore[attr-defined]
    async with app.state.kit.db.sessions() as session:
        return {row.thing_id: row.type for row in await session.scalars(select(Seen))}


async def test_a_poison_event_is_listed_then_replayed_once_fixed(
    probe: httpx.AsyncClient, transport: MemoryTransport, switch: Switch
) -> None:
    switch.broken = {"p1"}
    poison = happened("p1")
    await deliver(transport, THINGS, poison)
    await deliver(transport, THINGS, happened("ok1"))  # the next event is not blocked
    assert await seen(probe) == {"ok1": "Happened"}

    async def listed() -> list[dict[str, Any]]:
        return list((await probe.get("/dlq")).json())

    [letter] = await async_wait_until(listed, what="the poison's dead letter, after 2 retries")
    switch.broken = set()
    assert letter["event_id"] == str(poison.id)
    assert (letter["type"], letter["topic"], letter["attempts"]) == (
        "Happened",
        THINGS,
        3,
    )
    assert "handler is broken" in letter["error"]
    assert Envelope.model_validate_json(letter["payload"]) == poison
    assert await seen(probe) == {"ok1": "Happened"}
    [(queue, body, headers)] = transport.dead_letters
    assert (queue, body) == ("dlq.probe", poison.to_bytes())
    assert headers["x-attempts"] == "3"
    assert headers["x-original-topic"] == THINGS
    assert "handler is broken" in headers["x-error"]

    replayed = await probe.post("/dlq/replay", json={"event_ids": [str(poison.id)]})
    assert replayed.json() == {"replayed": 1}
    assert (await probe.get("/dlq")).json() == []
    assert await seen(probe) == {"ok1": "Happened", "p1": "Happened"}
    assert (await probe.post("/dlq/replay")).json() == {"replayed": 0}


async def test_malformed_messages_are_dead_lettered_with_the_reason(
    probe: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    await transport.publish(THINGS, b"not json", key="", event_type="")
    unknown = new_event("Exploded", {"thing_id": "u"}, source="source", aggregate_id="u")
    await transport.publish(THINGS, unknown.to_bytes(), key="u", event_type="Exploded")
    letters = (await probe.get("/dlq")).json()
    assert [(d["attempts"], d["error"].split(":")[0]) for d in letters] == [
        (0, "not valid JSON"),
        (0, "unknown event type 'Exploded'"),
    ]
    assert letters[1]["event_id"] == str(unknown.id)
    # A page at a time: `after` is the position of the last one seen.
    [first] = (await probe.get("/dlq", params={"limit": 1})).json()
    rest = (await probe.get("/dlq", params={"after": first["position"]})).json()
    assert [first["position"], *[d["position"] for d in rest]] == [d["position"] for d in letters]
    app = probe._transport.app  # type: ignore[attr-defined]
    async with app.state.kit.db.sessions() as session:
        keys = {row.event_id: row.key for row in await session.scalars(select(DeadLetter))}
    assert keys[str(unknown.id)] == "u"  # its aggregate id: replay publishes with it again


async def test_rebuild_replays_the_feed_into_an_emptied_read_model(
    probe: httpx.AsyncClient, transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [
        happened("a"),
        happened("b"),
        vanished("a"),
    ]
    for event in events:
        await deliver(transport, THINGS, event)
    live = await seen(probe)
    feed = [
        {"position": n, "stream": THINGS, "event": e.model_dump(mode="json")}
        for n, e in enumerate(events, start=1)
    ]

    async def fake_pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        assert url == "http://127.0.0.1:9001/events"  # <SOURCE>_URL unset: roster port
        assert "Authorization" not in client.headers  # no ADMIN_TOKEN here
        yield feed[:2]  # a page at a time
        yield feed[2:]

    monkeypatch.setattr(rebuild_module, "feed_pages", fake_pages)
    response = await probe.post("/admin/rebuild")
    assert response.json() == {"replayed": {THINGS: 3}}
    assert await seen(probe) == live == {"a": "Vanished", "b": "Happened"}
    # The inbox was rebuilt too: a live redelivery still changes nothing.
    await deliver(transport, THINGS, events[1])
    assert await seen(probe) == live


async def test_a_rebuild_on_another_replica_pauses_this_one_and_refuses_a_second(
    probe: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    kit = probe._transport.app.state.kit  # type: ignore[attr-defined]
    assert await pause.hold(kit.db, renew=False)  # another replica's rebuild begins
    assert not await pause.hold(kit.db, renew=False)
    refused = await probe.post("/admin/rebuild")
    assert refused.status_code == 409 and "already running" in refused.json()["detail"]
    live = asyncio.create_task(deliver(transport, THINGS, happened("during")))
    with pytest.raises(TimeoutError):  # the live event waits while the pause holds
        await asyncio.wait_for(asyncio.shield(live), 0.5)
    assert await seen(probe) == {}
    await pause.release(kit.db)  # that rebuild ends
    await asyncio.wait_for(live, 10)
    assert await seen(probe) == {"during": "Happened"}


async def test_admin_calls_need_the_token_when_one_is_set(
    database_url: str,
    transport: MemoryTransport,
    switch: Switch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens: list[str | None] = []

    async def fake_pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        tokens.append(client.headers["Authorization"].removeprefix("Bearer "))
        for page in ():
            yield page

    monkeypatch.setattr(rebuild_module, "feed_pages", fake_pages)
    monkeypatch.setenv("SOURCE_URL", "http://source.internal:8000/")
    settings = Settings(DATABASE_URL=database_url, ADMIN_TOKEN="s3cret")
    async with running(build(settings, transport, switch)) as client:
        assert (await client.get("/dlq")).status_code == 401
        wrong = await client.get("/dlq", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert "wrong admin token" in wrong.json()["detail"]
        right = await client.get("/dlq", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        odd = await client.get("/dlq", headers={"Authorization": "Bearer sécret".encode()})
        assert odd.status_code == 403  # any token gets an answer, never a 500
        rebuilt = await client.post("/admin/rebuild", headers={"Authorization": "Bearer s3cret"})
        assert rebuilt.status_code == 200
        # A rebuild reads the publisher's feed where <NAME>_URL says, with its own token.
        assert tokens == ["s3cret"]
        kit = client._transport.app.state.kit  # type: ignore[attr-defined]
        assert kit.feed_urls() == {THINGS: "http://source.internal:8000/events"}
        assert (await client.get("/health")).status_code == 200


async def test_the_transports_config_governs_retries(probe: httpx.AsyncClient) -> None:
    consumer = probe._transport.app.state.kit.consumer  # type: ignore[attr-defined]
    config = consumer.transport.config
    assert (config.max_retries, config.retry_delay(1)) == (2, 0.001)


async def test_publish_message_takes_a_dict_or_an_envelope(probe: httpx.AsyncClient) -> None:
    kit = probe._transport.app.state.kit  # type: ignore[attr-defined]
    sent = await kit.publish_message(
        THINGS, {"type": "Happened", "data": {"thing_id": "d1"}, "aggregate_id": "d1"}
    )
    assert (sent.source, sent.aggregate_id, sent.version) == ("probe", "d1", 1)
    await kit.publish_message(THINGS, vanished("d1"))
    assert await seen(probe) == {"d1": "Vanished"}
    with pytest.raises(InvalidEvent, match="unknown event type 'Nope'"):
        await kit.publish_message(THINGS, {"type": "Nope", "data": {}})


async def test_retention_prunes_old_inbox_and_sent_outbox_rows(
    database_url: str, transport: MemoryTransport, switch: Switch
) -> None:
    settings = Settings(
        DATABASE_URL=database_url, INBOX_RETENTION_SECONDS=3600, OUTBOX_RETENTION_SECONDS=3600
    )
    async with running(build(settings, transport, switch)) as client:
        kit = client._transport.app.state.kit  # type: ignore[attr-defined]
        await deliver(transport, THINGS, happened("fresh"))
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        async with kit.transaction() as session:
            session.add(
                ProcessedEvent(
                    event_id=str(uuid.uuid4()),
                    event_type="Happened",
                    stream=THINGS,
                    processed_at=long_ago,
                )
            )
            add_to_outbox(session, THINGS, happened("old"))
        async with kit.db.transaction() as session:
            await session.execute(update(OutboxMessage).values(sent_at=long_ago))
        assert await kit.prune() == {"inbox": 1, "outbox": 1}
        async with kit.db.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 1


async def test_replaying_ids_with_control_characters_is_a_422(probe: httpx.AsyncClient) -> None:
    response = await probe.post("/dlq/replay", json={"event_ids": ["a\x00b"]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "event_ids"]
