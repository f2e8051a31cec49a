"""The user service's event feed: what consumers replay to rebuild."""

import httpx

from eventkit.testing import running
from eventkit.transports.memory import MemoryTransport
from user_service.main import create_app
from user_service.settings import Settings


async def test_feed_pages_through_every_event_in_order(client: httpx.AsyncClient) -> None:
    ids = []
    for n in range(5):
        user = (await client.post("/users", json={"name": f"U{n}", "email": f"u{n}@x.io"})).json()
        ids.append(user["id"])
    await client.delete(f"/users/{ids[0]}")
    first = (await client.get("/events", params={"limit": 4})).json()
    rest = (await client.get("/events", params={"after": first[-1]["position"]})).json()
    feed = first + rest
    assert [item["event"]["type"] for item in feed] == ["UserCreated"] * 5 + ["UserDeactivated"]
    assert [item["event"]["data"]["user_id"] for item in feed[:5]] == ids
    assert {item["stream"] for item in feed} == {"user.events"}
    positions = [item["position"] for item in feed]
    assert positions == sorted(positions) and len(set(positions)) == 6


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
