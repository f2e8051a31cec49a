"""Notification's read model, fed user events through the in-process transport."""

import httpx

from eventkit import new_event
from eventkit.bus import InProcessTransport
from eventkit.testing import deliver


async def test_a_new_user_gets_one_welcome(
    client: httpx.AsyncClient, transport: InProcessTransport
) -> None:
    event = new_event(
        "UserCreated", {"user_id": "u1", "name": "Ada", "email": "ada@example.com"}, source="user"
    )
    await deliver(transport, event)
    await deliver(transport, event)  # redelivered: no second email
    sent = (await client.get("/notifications", params={"user_id": "u1"})).json()
    assert [(n["kind"], n["recipient"], n["event_id"]) for n in sent] == [
        ("welcome", "ada@example.com", str(event.id))
    ]
    assert sent[0]["channel"] == "log"
    assert sent[0]["created_at"].endswith(("+00:00", "Z"))
    assert (await client.get("/notifications", params={"user_id": "other"})).json() == []
