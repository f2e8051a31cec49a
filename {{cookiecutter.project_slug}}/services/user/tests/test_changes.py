"""Changing users: versions, If-Match, deactivation, history, and concurrent writers."""

import asyncio
from typing import Any

import httpx


async def new_user(client: httpx.AsyncClient, email: str = "ada@example.com") -> dict[str, Any]:
    response = await client.post("/users", json={"name": "Ada", "email": email})
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


async def test_each_change_adds_a_version(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    renamed = await client.patch(url, json={"name": "Ada L."})
    assert renamed.status_code == 200
    assert renamed.json()["version"] == 2
    both = await client.patch(url, json={"name": "Ada K.", "email": "ak@example.com"})
    assert both.json() | {"id": "-"} == {
        "id": "-",
        "name": "Ada K.",
        "email": "ak@example.com",
        "status": "active",
        "version": 4,
    }
    unchanged = await client.patch(url, json={"name": "Ada K."})
    assert unchanged.json()["version"] == 4


async def test_state_as_of_any_version(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    await client.patch(url, json={"name": "Second"})
    await client.patch(url, json={"name": "Third"})
    assert (await client.get(url, params={"version": 1})).json()["name"] == "Ada"
    assert (await client.get(url, params={"version": 2})).json()["name"] == "Second"
    assert (await client.get(url)).json()["name"] == "Third"
    assert (await client.get(url, params={"version": 9})).status_code == 404
    assert (await client.get(url, params={"version": 0})).status_code == 422


async def test_a_stale_if_match_is_a_conflict(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    ok = await client.patch(url, json={"name": "B"}, headers={"If-Match": "1"})
    assert ok.status_code == 200
    stale = await client.patch(url, json={"name": "C"}, headers={"If-Match": "1"})
    assert stale.status_code == 409
    assert "version" in stale.json()["detail"]
    assert (await client.get(url)).json()["name"] == "B"


async def test_an_email_held_by_another_user_cannot_be_taken(client: httpx.AsyncClient) -> None:
    await new_user(client, "one@example.com")
    two = await new_user(client, "two@example.com")
    taken = await client.patch(f"/users/{two['id']}", json={"email": "ONE@example.com"})
    assert taken.status_code == 409
    # The old address is released once changed.
    moved = await client.patch(f"/users/{two['id']}", json={"email": "new@example.com"})
    assert moved.status_code == 200
    assert (
        await client.post("/users", json={"name": "X", "email": "two@example.com"})
    ).status_code == 201


async def test_deactivated_users_cannot_change(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    gone = await client.delete(url)
    assert gone.status_code == 200
    assert (gone.json()["status"], gone.json()["version"]) == ("deactivated", 2)
    assert (await client.patch(url, json={"name": "Z"})).status_code == 409
    assert (await client.delete(url)).status_code == 409


async def test_history_lists_every_event_oldest_first(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    await client.patch(url, json={"email": "other@example.com"})
    await client.delete(url)
    events = (await client.get(f"{url}/events")).json()
    assert [e["type"] for e in events] == ["UserCreated", "EmailChanged", "UserDeactivated"]
    assert all(e["data"]["user_id"] == user["id"] and e["source"] == "user" for e in events)
    assert set(events[0]) == {
        "id",
        "type",
        "version",
        "timestamp",
        "source",
        "correlation_id",
        "causation_id",
        "aggregate_id",
        "sequence",
        "data",
    }
    # Each carries its aggregate and its place in that aggregate's history.
    assert [(e["aggregate_id"], e["sequence"]) for e in events] == [
        (user["id"], n) for n in (1, 2, 3)
    ]
    assert (await client.get("/users/nobody/events")).status_code == 404


async def test_history_is_a_list_in_pages(client: httpx.AsyncClient) -> None:
    """`limit` (default 100, at most 1,000) and `after` (a sequence), as every list."""
    user = await new_user(client)
    url = f"/users/{user['id']}"
    for n in range(104):
        assert (await client.patch(url, json={"name": f"name {n}"})).status_code == 200
    first = (await client.get(f"{url}/events")).json()
    assert [e["sequence"] for e in first] == list(range(1, 101))  # the default page
    rest = (await client.get(f"{url}/events", params={"after": first[-1]["sequence"]})).json()
    assert [e["sequence"] for e in rest] == list(range(101, 106))
    two = (await client.get(f"{url}/events", params={"after": 3, "limit": 2})).json()
    assert [(e["sequence"], e["data"]["new_name"]) for e in two] == [(4, "name 2"), (5, "name 3")]
    assert (await client.get(f"{url}/events", params={"after": 105})).json() == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": 2**40}):
        response = await client.get(f"{url}/events", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(bad))]
    missing = await client.get("/users/nobody/events", params={"after": 5})
    assert missing.status_code == 404


async def test_empty_or_bad_changes_are_422(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    assert (await client.patch(url, json={})).status_code == 422
    assert (await client.patch(url, json={"email": "nope"})).status_code == 422
    assert (await client.patch("/users/nobody", json={"name": "A"})).status_code == 404


async def test_of_two_writers_on_the_same_version_exactly_one_wins(
    client: httpx.AsyncClient,
) -> None:
    for n in range(5):
        user = await new_user(client, f"race-{n}@example.com")
        url = f"/users/{user['id']}"
        results = await asyncio.gather(
            *(
                client.patch(url, json={"name": name}, headers={"If-Match": "1"})
                for name in ("left", "right")
            )
        )
        assert sorted(r.status_code for r in results) == [200, 409]
        winner = next(r.json() for r in results if r.status_code == 200)
        current = (await client.get(url)).json()
        assert current == winner
        assert len((await client.get(f"{url}/events")).json()) == 2


async def test_concurrent_writers_never_lose_an_update_silently(
    client: httpx.AsyncClient,
) -> None:
    user = await new_user(client)
    url = f"/users/{user['id']}"
    results = await asyncio.gather(
        *(client.patch(url, json={"name": f"name {n}"}) for n in range(6))
    )
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 409}
    events = (await client.get(f"{url}/events")).json()
    # Every 200 is one stored event; a loser was told with a 409.
    assert len(events) == 1 + codes.count(200)
    assert (await client.get(url)).json()["version"] == len(events)
