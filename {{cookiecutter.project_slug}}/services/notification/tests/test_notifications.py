"""Notification's read model, fed events through FastStream's test broker."""

import httpx

from contracts.testing import deliver
from eventkit import new_event
from eventkit.transports import Transport


async def sent_to(client: httpx.AsyncClient, user_id: str) -> list[tuple[str, str]]:
    sent = (await client.get("/notifications", params={"user_id": user_id})).json()
    return [(n["kind"], n["recipient"]) for n in sent]


async def test_a_new_user_gets_one_welcome(client: httpx.AsyncClient, transport: Transport) -> None:
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


async def test_every_kind_goes_to_the_current_address(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    user = {"user_id": "u1", "name": "Ada", "email": "ada@example.com"}
    await deliver(transport, new_event("UserCreated", user, source="user"))
    await deliver(
        transport, new_event("NameChanged", {"user_id": "u1", "new_name": "A"}, source="user")
    )
    await deliver(
        transport,
        new_event("EmailChanged", {"user_id": "u1", "new_email": "a@new.io"}, source="user"),
    )
    invoice = {"invoice_id": "i1", "user_id": "u1", "amount": "9.50"}
    await deliver(transport, new_event("InvoiceIssued", invoice, source="billing"))
    await deliver(transport, new_event("UserDeactivated", {"user_id": "u1"}, source="user"))
    assert await sent_to(client, "u1") == [
        ("welcome", "ada@example.com"),
        ("email_changed", "a@new.io"),
        ("invoice_issued", "a@new.io"),
        ("goodbye", "a@new.io"),
    ]


async def test_notifications_come_in_pages(client: httpx.AsyncClient, transport: Transport) -> None:
    for n in range(5):
        data = {"user_id": f"p{n}", "name": "P", "email": f"p{n}@example.com"}
        await deliver(transport, new_event("UserCreated", data, source="user"))
    first = (await client.get("/notifications", params={"limit": 2})).json()
    rest = (await client.get("/notifications", params={"after": first[-1]["id"]})).json()
    assert [n["user_id"] for n in first + rest] == [f"p{n}" for n in range(5)]
    assert (await client.get("/notifications", params={"limit": 0})).status_code == 422
