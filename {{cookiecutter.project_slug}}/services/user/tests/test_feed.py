"""The user service's event feed: what consumers replay to rebuild."""

from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from eventkit.feed import PENDING_KEY_HEADER, PENDING_POSITION_HEADER
from eventkit.outbox import OutboxMessage
from eventkit.testing import async_wait_until, running
from eventkit.transports.memory import MemoryTransport
from user_service.main import create_app
from user_service.settings import Settings


async def test_feed_pages_through_every_event_in_order(client: httpx.AsyncClient) -> None:
    ids = []
    for n in range(5):
        user = (await client.post("/users", json={"name": f"U{n}", "email": f"u{n}@x.io"})).json()
        ids.append(user["id"])
    await client.delete(f"/users/{ids[0]}")
    await feed_holds(client, 6)  # once the relay has sent them
    first = (await client.get("/events", params={"limit": 4})).json()
    rest = (await client.get("/events", params={"after": first[-1]["position"]})).json()
    feed = first + rest
    assert [item["event"]["type"] for item in feed] == ["UserCreated"] * 5 + ["UserDeactivated"]
    assert [item["event"]["data"]["user_id"] for item in feed[:5]] == ids
    assert {item["stream"] for item in feed} == {"user.events"}
    positions = [item["position"] for item in feed]
    assert positions == sorted(positions) and len(set(positions)) == 6


async def feed_holds(client: httpx.AsyncClient, count: int) -> list[Any]:
    async def feed() -> list[Any] | None:
        items: list[Any] = (await client.get("/events")).json()
        return items if len(items) == count else None

    return await async_wait_until(feed, what=f"{count} events in the feed")


async def test_the_feed_holds_only_what_the_broker_has(
    client: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    """Found by the simulation (seed 14000784): billing rebuilt from an event still in the
    user service's outbox, took an invoice for that user, and notification, which had not
    heard of the user, dead-lettered the invoice."""
    await transport.stop()  # the broker does not answer: the sign-up waits in the outbox
    await client.post("/users", json={"name": "Ada", "email": "ada@x.io"})
    assert (await client.get("/events")).json() == []
    await transport.start()
    (item,) = await feed_holds(client, 1)
    assert item["event"]["type"] == "UserCreated"


async def test_a_page_ends_at_an_event_the_broker_does_not_have_yet(
    client: httpx.AsyncClient, transport: MemoryTransport, database_url: str
) -> None:
    """Found by the simulation (seed 22000763): a rebuild read past an event not yet sent
    (its confirm lost), and replayed the user's next event, sent meanwhile, before it. The
    page names the event, so a reader leaves that key out and goes on after it."""
    for name in ("Ada", "Bea", "Cy"):
        await client.post("/users", json={"name": name, "email": f"{name.lower()}@x.io"})
    items = await feed_holds(client, 3)
    await transport.stop()  # the relay cannot send it again meanwhile
    unsent = items[1]
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:  # as a lost confirm leaves it
        await connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.position == unsent["position"])
            .values(sent_at=None)
        )
    await engine.dispose()
    page = await client.get("/events")
    assert page.json() == items[:1]
    assert page.headers[PENDING_POSITION_HEADER] == str(unsent["position"])
    assert page.headers[PENDING_KEY_HEADER] == unsent["event"]["aggregate_id"]
    rest = await client.get("/events", params={"after": unsent["position"]})
    assert rest.json() == items[2:]
    assert PENDING_POSITION_HEADER not in rest.headers


async def test_the_feed_is_an_admin_call_with_bounded_positions(
    database_url: str, transport: MemoryTransport
) -> None:
    app = create_app(Settings(DATABASE_URL=database_url, ADMIN_TOKEN="s3cret"), transport)
    async with running(app) as client:
        assert (await client.get("/events")).status_code == 401
        admin = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/events", headers=admin)).json() == []
        huge = await client.get("/events", params={"after": 10**20}, headers=admin)
        assert huge.status_code == 422
        assert huge.json()["detail"][0]["loc"] == ["query", "after"]
