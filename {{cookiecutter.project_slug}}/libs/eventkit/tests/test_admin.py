"""Dead letters, their replay, rebuilds and the admin token, on a small service of its own."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, HTTPException
from sqlalchemy import String, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import (
    Envelope,
    InvalidEvent,
    Kit,
    ServiceSettings,
    Subscriptions,
    add_to_outbox,
    clock,
    create_service,
    new_event,
    pause,
)
from eventkit import rebuild as rebuild_module
from eventkit.db import Base, Database
from eventkit.dead_letters import DeadLetter
from eventkit.deps import READ_MODEL
from eventkit.feed import PENDING_KEY_HEADER, PENDING_POSITION_HEADER
from eventkit.inbox import ProcessedEvent
from eventkit.outbox import OutboxMessage
from eventkit.testing import async_wait_until, deliver, running
from eventkit.transports import Outgoing
from eventkit.transports.memory import MemoryConfig, MemoryTransport
from sample_domain import THINGS, happened, things_roster, vanished

# What a fake feed_pages yields when the feed has no events.
NO_PAGES: tuple[list[dict[str, Any]], ...] = ()


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

    reads = APIRouter(dependencies=[READ_MODEL])

    @reads.get("/seen/{thing_id}")
    async def seen_one(thing_id: str, kit: Kit) -> str:
        async with kit.db.sessions() as session:
            row = await session.get(Seen, thing_id)
        if row is None:
            raise HTTPException(404, detail=f"not seen: {thing_id}")
        return row.type

    return create_service(
        settings,
        things_roster("probe"),
        [reads],
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

    published = len(transport.published)
    replayed = await probe.post("/dlq/replay", json={"event_ids": [str(poison.id)]})
    assert replayed.json() == {"replayed": 1}  # the contract's answer
    assert (await probe.get("/dlq")).json() == []
    # It comes back through the retry delay.
    await async_wait_until(lambda: _has(probe, "p1"), what="the replayed event applied")
    assert await seen(probe) == {"ok1": "Happened", "p1": "Happened"}
    # Handed back to this service alone, its attempts counted afresh: not to the stream.
    assert len(transport.published) == published
    *_, (stream, body, headers, _) = transport.retries
    assert (stream, body, headers["x-attempts"]) == (THINGS, poison.to_bytes(), "0")
    assert (await probe.post("/dlq/replay")).json()["replayed"] == 0


async def _has(client: httpx.AsyncClient, thing_id: str) -> bool:
    return thing_id in await seen(client)


async def test_a_replay_goes_a_page_at_a_time_and_counts_attempts_afresh(
    probe: httpx.AsyncClient, transport: MemoryTransport, switch: Switch
) -> None:
    switch.broken = {f"r{n}" for n in range(5)}
    for n in range(5):
        await deliver(transport, THINGS, happened(f"r{n}"))

    async def five() -> list[dict[str, Any]] | None:
        letters = list((await probe.get("/dlq")).json())
        return letters if len(letters) == 5 else None

    letters = await async_wait_until(five, what="five dead letters")
    positions = [letter["position"] for letter in letters]
    first = (await probe.post("/dlq/replay", params={"limit": 2})).json()
    assert first == {"replayed": 2, "next": positions[1], "through": positions[-1]}
    # Still broken: the two fail again, all their attempts anew, and come back as new dead
    # letters, after the end of this replay; going on with `through` leaves them out.
    await async_wait_until(five, what="the two replayed ones back, each after 3 attempts")
    again = [d for d in (await probe.get("/dlq")).json() if d["position"] > positions[-1]]
    assert [d["attempts"] for d in again] == [3, 3]
    rest = {"after": first["next"], "through": first["through"], "limit": 2}
    second = (await probe.post("/dlq/replay", params=rest)).json()
    assert second == {"replayed": 2, "next": positions[3], "through": positions[-1]}
    rest["after"] = second["next"]
    third = (await probe.post("/dlq/replay", params=rest)).json()
    assert third == {"replayed": 1, "next": None, "through": positions[-1]}
    await async_wait_until(five, what="all five back")
    assert all(d["position"] > positions[-1] for d in (await probe.get("/dlq")).json())
    bad = await probe.post("/dlq/replay", params={"limit": 1001})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_malformed_messages_are_dead_lettered_with_the_reason(
    probe: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    await transport.publish(Outgoing(stream=THINGS, body=b"not json", key="", event_type=""))
    invalid = new_event("Vanished", {"thing": "u"}, source="source", aggregate_id="u")
    await transport.publish(
        Outgoing(stream=THINGS, body=invalid.to_bytes(), key="u", event_type="Vanished")
    )
    # A type it does not know yet is listed, and held for a later deploy.
    unknown = new_event("Exploded", {"thing_id": "x"}, source="source", aggregate_id="x")
    await transport.publish(
        Outgoing(stream=THINGS, body=unknown.to_bytes(), key="x", event_type="Exploded")
    )
    letters = (await probe.get("/dlq")).json()
    assert [(d["attempts"], d["error"].split(":")[0]) for d in letters] == [
        (0, "not valid JSON"),
        (0, "invalid Vanished data"),
        (0, "unknown event type 'Exploded'; held"),
    ]
    held = [Envelope.from_bytes(body).id for _, body, headers, _ in transport.retries]
    assert held and set(held) == {unknown.id}  # round after round, on the retry delay
    assert letters[1]["event_id"] == str(invalid.id)
    # A page at a time: `after` is the position of the last one seen.
    [first] = (await probe.get("/dlq", params={"limit": 1})).json()
    rest = (await probe.get("/dlq", params={"after": first["position"]})).json()
    assert [first["position"], *[d["position"] for d in rest]] == [d["position"] for d in letters]
    app = probe._transport.app  # type: ignore[attr-defined]
    async with app.state.kit.db.sessions() as session:
        keys = {row.event_id: row.key for row in await session.scalars(select(DeadLetter))}
    assert keys[str(invalid.id)] == "u"  # its aggregate id: replay publishes with it again


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


def feed_item(position: int, key: str) -> dict[str, Any]:
    return {"position": position, "stream": THINGS, "event": {"aggregate_id": key}}


async def read_feed(answers: dict[int, list[httpx.Response]]) -> list[list[int]]:
    """The positions of each page feed_pages yields from a feed that gives, for each
    `after`, its answers in turn (the last one again and again)."""

    def answer(request: httpx.Request) -> httpx.Response:
        given = answers[int(request.url.params["after"])]
        return given.pop(0) if len(given) > 1 else given[0]

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        pages = [page async for page in rebuild_module.feed_pages(client, "http://feed/events")]
    return [[item["position"] for item in page] for page in pages]


def ends_before(position: int, key: str, *items: dict[str, Any]) -> httpx.Response:
    """A page that ends at an event not marked sent (feed.py)."""
    headers = {PENDING_POSITION_HEADER: str(position), PENDING_KEY_HEADER: key}
    return httpx.Response(200, json=list(items), headers=headers)


async def test_the_feed_reader_asks_again_for_an_event_not_marked_sent_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the simulation (seeds 32000018, 31000026): the broker had the event and a
    consumer had applied it, then the rebuild undid that; the mark followed a moment later.
    Left out, it was lost to the rebuilt read model: the reader waits for the mark."""
    monkeypatch.setattr(rebuild_module, "UNSENT_POLL_SECONDS", 0)
    answers = {
        0: [ends_before(2, "b", feed_item(1, "a"))],
        1: [ends_before(2, "b"), httpx.Response(200, json=[feed_item(2, "b"), feed_item(3, "b")])],
        3: [httpx.Response(200, json=[])],
    }
    assert await read_feed(answers) == [[1], [2, 3]]


async def test_the_feed_reader_leaves_out_the_key_of_an_event_that_stays_unsent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Still unsent after the reader's asks, the event will be published again: it and its
    key's later events (however soon sent) come through the broker, in order."""
    monkeypatch.setattr(rebuild_module, "UNSENT_POLL_SECONDS", 0)
    monkeypatch.setattr(rebuild_module, "UNSENT_POLLS", 1)
    answers = {
        0: [ends_before(2, "b", feed_item(1, "a"))],
        1: [ends_before(2, "b")],
        2: [httpx.Response(200, json=[feed_item(3, "b"), feed_item(4, "c")])],
        4: [httpx.Response(200, json=[])],
    }
    assert await read_feed(answers) == [[1], [4]]


async def test_a_rebuild_on_another_replica_pauses_this_one_and_refuses_a_second(
    probe: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    kit = probe._transport.app.state.kit  # type: ignore[attr-defined]
    assert await pause.take(kit.db, "other")  # another replica's rebuild begins
    assert not await pause.take(kit.db, "third")
    refused = await probe.post("/admin/rebuild")
    assert refused.status_code == 409
    assert "a rebuild by other holds the read model" in refused.json()["detail"]
    live = asyncio.create_task(deliver(transport, THINGS, happened("during")))
    with pytest.raises(TimeoutError):  # the live event waits while the pause holds
        await asyncio.wait_for(asyncio.shield(live), 0.5)
    assert await seen(probe) == {}
    await pause.release(kit.db, "other")  # that rebuild ends
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
        for page in NO_PAGES:
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
        odd = await client.get("/dlq", headers={b"Authorization": "Bearer sécret".encode()})
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
            await session.flush()
            # Sent in the same commit: a relay that saw it pending would publish it to the
            # probe itself, which would add an inbox row and mark it sent again.
            await session.execute(update(OutboxMessage).values(sent_at=long_ago))
        assert await kit.prune() == {"inbox": 1, "outbox": 1}
        async with kit.db.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 1


async def test_replaying_ids_with_control_characters_is_a_422(probe: httpx.AsyncClient) -> None:
    response = await probe.post("/dlq/replay", json={"event_ids": ["a\x00b"]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "event_ids"]


def feed_of(events: list[Envelope]) -> list[dict[str, Any]]:
    return [
        {"position": n, "stream": THINGS, "event": e.model_dump(mode="json")}
        for n, e in enumerate(events, start=1)
    ]


async def paused(kit: Any) -> bool:
    """Whether a live batch would wait now."""
    async with kit.db.transaction() as session:
        try:
            await pause.check_running(session)
        except pause.Paused:
            return True
    return False


async def test_a_failed_rebuild_keeps_consumption_paused_until_a_rebuild_succeeds(
    probe: httpx.AsyncClient, transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [happened("a"), happened("b")]
    for event in events:
        await deliver(transport, THINGS, event)
    attempts = {"n": 0}

    async def pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        attempts["n"] += 1
        yield feed_of(events)[:1]
        if attempts["n"] == 1:
            raise httpx.ConnectError("the publisher went away")
        yield feed_of(events)[1:]

    monkeypatch.setattr(rebuild_module, "feed_pages", pages)
    failed = await probe.post("/admin/rebuild")
    assert failed.status_code == 503
    assert "the publisher went away" in failed.json()["detail"]
    monkeypatch.setattr(transport.config, "batch_hold_seconds", 0.2)  # back to the broker soon
    during = happened("during")
    with pytest.raises(pause.Paused):  # not applied to a partial model: back to the broker
        await deliver(transport, THINGS, during)
    assert await seen(probe) == {}  # emptied, and the replay stopped before a's batch
    for path in ("/seen/a", "/seen/b"):  # b would be a 404: it was not replayed
        unavailable = await probe.get(path)
        assert unavailable.status_code == 503
        assert "the publisher went away" in unavailable.json()["detail"]
    ready = await probe.get("/ready")
    assert ready.status_code == 200  # every replica shares it; a rebuild must reach one
    assert "the publisher went away" in ready.json()["read_model"]
    rebuilt = await probe.post("/admin/rebuild")
    assert rebuilt.status_code == 200, rebuilt.text
    await deliver(transport, THINGS, during)  # the broker's redelivery
    assert await seen(probe) == {"a": "Happened", "b": "Happened", "during": "Happened"}
    assert (await probe.get("/seen/b")).json() == "Happened"
    assert (await probe.get("/ready")).json()["read_model"] == "whole"


async def test_a_rebuild_that_meets_an_event_it_does_not_know_fails_and_dead_letters_nothing(
    probe: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher was deployed first: its feed holds a newer event. The rebuild stops with
    the reason (its live copy is held meanwhile), and succeeds once this service knows it."""
    events = [happened("a"), happened("b").model_copy(update={"type": "Exploded"})]

    async def pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        yield feed_of(events)

    monkeypatch.setattr(rebuild_module, "feed_pages", pages)
    failed = await probe.post("/admin/rebuild")
    assert failed.status_code == 503
    assert "unknown event type 'Exploded'" in failed.json()["detail"]
    assert "deploy this service" in failed.json()["detail"]
    assert (await probe.get("/dlq")).json() == []  # a good event: not a dead letter
    assert (await probe.get("/seen/a")).status_code == 503  # paused, with the reason
    events.pop()  # (as if deployed: the feed holds only what it knows)
    assert (await probe.post("/admin/rebuild")).status_code == 200
    assert await seen(probe) == {"a": "Happened"}


async def no_events(
    client: httpx.AsyncClient, url: str, page_size: int = 500
) -> AsyncIterator[list[dict[str, Any]]]:
    for page in NO_PAGES:
        yield page


async def test_a_rebuild_whose_process_died_leaves_the_service_paused_past_its_lease(
    probe: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild_module, "feed_pages", no_events)
    kit = probe._transport.app.state.kit  # type: ignore[attr-defined]
    assert await pause.take(kit.db, "gone")  # a replica took the pause, then died
    running_reply = await probe.get("/seen/x")
    assert (
        running_reply.status_code == 503
        and "a rebuild by gone holds the read model" in running_reply.json()["detail"]
    )
    async with kit.db.transaction() as session:  # its lease runs out
        await session.execute(
            update(pause.ConsumerPause).values(paused_until=datetime.now(UTC) - timedelta(1))
        )
    assert await paused(kit)
    reply = await probe.get("/seen/x")
    assert reply.status_code == 503 and "gone did not finish" in reply.json()["detail"]
    assert (await probe.post("/admin/rebuild")).status_code == 200
    assert not await paused(kit)
    assert (await probe.get("/seen/x")).status_code == 404


async def lease_runs_out(kit: Any) -> None:
    """As if the rebuild that holds the pause had stalled past its lease."""
    async with kit.db.transaction() as session:
        await session.execute(
            update(pause.ConsumerPause).values(paused_until=datetime.now(UTC) - timedelta(1))
        )


def replicas_feed(
    monkeypatch: pytest.MonkeyPatch,
    a: list[list[dict[str, Any]] | asyncio.Event],
    b: list[list[dict[str, Any]] | asyncio.Event],
) -> list[str]:
    """A fake feed_pages for two replicas' rebuilds: the first to read is A, the next B.
    Each goes through its steps, yielding a page or waiting for an event. Returns the
    readers so far, for the test to wait on."""
    readers: list[str] = []

    async def pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        readers.append("a" if not readers else "b")
        for step in a if len(readers) == 1 else b:
            if isinstance(step, asyncio.Event):
                await step.wait()
            else:
                yield step

    monkeypatch.setattr(rebuild_module, "feed_pages", pages)
    return readers


@asynccontextmanager
async def a_stalled_rebuild(
    database_url: str, switch: Switch, readers: list[str]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Any, asyncio.Task[httpx.Response]]]:
    """Replicas A and B; A's rebuild is under way (its feed reader registered in `readers`)
    and has stalled past its lease. Yields A's and B's clients, the kit, A's request."""
    replica_a = build(Settings(DATABASE_URL=database_url), MemoryTransport(), switch)
    replica_b = build(Settings(DATABASE_URL=database_url), MemoryTransport(), switch)
    async with running(replica_a) as a, running(replica_b) as b:
        kit = replica_a.state.kit
        first = asyncio.create_task(a.post("/admin/rebuild"))
        await async_wait_until(lambda: asyncio.sleep(0, readers == ["a"]), what="A's rebuild")
        await lease_runs_out(kit)
        yield a, b, kit, first


async def test_a_rebuild_that_lost_its_lease_stops_and_leaves_the_new_holders_pause(
    database_url: str, switch: Switch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A's rebuild stalls past its lease; replica B's rebuild takes the pause. A must
    not renew B's lease, nor release it when it ends, while B is still rebuilding."""
    monkeypatch.setattr(rebuild_module, "PAGE_SIZE", 2)  # a renewal between small batches
    feed = feed_of([happened(f"t{n}") for n in range(5)])
    a_goes_on, b_ends = asyncio.Event(), asyncio.Event()
    readers = replicas_feed(
        monkeypatch, [feed[:2], a_goes_on, feed[2:]], [feed[:1], b_ends, feed[1:]]
    )
    async with a_stalled_rebuild(database_url, switch, readers) as (a, b, kit, first):
        second = asyncio.create_task(b.post("/admin/rebuild"))
        await async_wait_until(lambda: asyncio.sleep(0, len(readers) == 2), what="B's rebuild")
        a_goes_on.set()
        stopped = await asyncio.wait_for(first, 10)
        assert stopped.status_code == 409, stopped.text
        assert "another rebuild" in stopped.json()["detail"]
        assert await paused(kit)  # B is still rebuilding
        b_ends.set()
        rebuilt = await asyncio.wait_for(second, 10)
        assert rebuilt.status_code == 200, rebuilt.text
        assert not await paused(kit)
        assert await seen(a) == {f"t{n}": "Happened" for n in range(5)}


async def test_a_rebuild_with_nothing_to_replay_that_lost_its_lease_does_not_succeed(
    database_url: str, switch: Switch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the simulation (seed 400160 on PostgreSQL): A's rebuild, with no events to
    replay, never renewed its lease; B's took the pause past it, and both answered 200."""
    a_goes_on = asyncio.Event()
    readers = replicas_feed(monkeypatch, [a_goes_on, *NO_PAGES], [*NO_PAGES])
    async with a_stalled_rebuild(database_url, switch, readers) as (_, b, kit, first):
        rebuilt = await b.post("/admin/rebuild")
        assert rebuilt.status_code == 200, rebuilt.text
        a_goes_on.set()
        stopped = await asyncio.wait_for(first, 10)
        assert stopped.status_code == 409, stopped.text
        assert "another rebuild" in stopped.json()["detail"]
        assert not await paused(kit)


async def test_the_rebuild_lease_runs_on_eventkits_clock(db: Database) -> None:
    """Found by the simulation (seed 300656): a rebuild failed as its database went down,
    so its pause could not be released, and the next rebuild waited for a lease on the
    wall clock, which the simulation's hours (on eventkit.clock) never reached."""
    assert await pause.take(db, "failed")
    assert not await pause.take(db, "next")
    later = clock.now() + pause.LEASE.total_seconds() + 1
    with clock.use(lambda: later):
        assert await pause.take(db, "next")
