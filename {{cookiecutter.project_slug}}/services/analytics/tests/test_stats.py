"""Analytics' counters, fed events of both streams through FastStream's test broker."""

import httpx

from contracts.testing import deliver
from eventkit import new_event
from eventkit.transports import Transport


async def test_stats_count_every_event_type(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    for n in range(3):
        data = {"user_id": f"u{n}", "name": "A", "email": f"a{n}@x.io"}
        await deliver(transport, new_event("UserCreated", data, source="user"))
    await deliver(transport, new_event("UserDeactivated", {"user_id": "u0"}, source="user"))
    invoice = {"invoice_id": "i1", "user_id": "u1", "amount": "12.50"}
    await deliver(transport, new_event("InvoiceIssued", invoice, source="billing"))
    await deliver(
        transport, new_event("InvoiceIssued", invoice | {"invoice_id": "i2"}, source="billing")
    )
    assert (await client.get("/stats")).json() == {
        "users_created": 3,
        "users_active": 2,
        "users_deactivated": 1,
        "invoices_issued": 2,
        "revenue_total": "25.00",
        "events_by_type": {"UserCreated": 3, "UserDeactivated": 1, "InvoiceIssued": 2},
    }


async def test_an_empty_read_model_reports_zeros(client: httpx.AsyncClient) -> None:
    stats = (await client.get("/stats")).json()
    assert stats["users_created"] == 0
    assert stats["events_by_type"] == {}
