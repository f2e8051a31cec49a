"""The user service's event feed: what consumers replay to rebuild."""

import httpx


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
