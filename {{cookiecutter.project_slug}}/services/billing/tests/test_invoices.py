"""Invoices: only for known, active users; money as Decimal; InvoiceIssued published."""

from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from billing_service.main import create_app
from billing_service.settings import Settings
from contracts.testing import deliver
from eventkit import Envelope, new_event
from eventkit.testing import async_wait_until
from eventkit.transports.memory import MemoryTransport


@pytest.fixture
def transport() -> MemoryTransport:
    """The in-process transport: its `published` shows what the relay sent."""
    return MemoryTransport()


@pytest.fixture
def app(database_url: str, transport: MemoryTransport) -> FastAPI:
    return create_app(Settings(DATABASE_URL=database_url), transport=transport)


@pytest.fixture
async def open_account(client: httpx.AsyncClient, transport: MemoryTransport) -> None:
    """User u1's account, open: the running service has had its UserCreated."""
    data = {"user_id": "u1", "name": "Ada", "email": "ada@example.com"}
    await deliver(transport, new_event("UserCreated", data, source="user"))


async def test_an_invoice_is_issued_and_published(
    client: httpx.AsyncClient, transport: MemoryTransport, open_account: None
) -> None:
    response = await client.post(
        "/invoices", json={"user_id": "u1", "amount": "19.99", "description": "plan"}
    )
    assert response.status_code == 201
    invoice = response.json()
    assert (invoice["user_id"], invoice["amount"], invoice["status"]) == ("u1", "19.99", "issued")

    async def published() -> list[Envelope]:
        return [
            Envelope.from_bytes(body)
            for stream, body in transport.published
            if stream == "billing.events"
        ]

    [event] = await async_wait_until(published, what="InvoiceIssued on billing.events")
    assert event.type == "InvoiceIssued"
    assert event.data == {"invoice_id": invoice["id"], "user_id": "u1", "amount": "19.99"}


async def test_account_totals_follow_invoices_exactly(
    client: httpx.AsyncClient, open_account: None
) -> None:
    for amount in ("0.10", "0.20", "100.05"):
        assert (
            await client.post("/invoices", json={"user_id": "u1", "amount": amount})
        ).status_code == 201
    account = (await client.get("/accounts/u1")).json()
    assert account["invoices"] == 3
    assert Decimal(account["invoiced_total"]) == Decimal("100.35")
    listed = (await client.get("/invoices", params={"user_id": "u1"})).json()
    assert [i["amount"] for i in listed] == ["0.10", "0.20", "100.05"]
    assert (await client.get("/invoices", params={"user_id": "other"})).json() == []


async def test_invoice_errors(
    client: httpx.AsyncClient, transport: MemoryTransport, open_account: None
) -> None:
    unknown = await client.post("/invoices", json={"user_id": "ghost", "amount": "5"})
    assert unknown.status_code == 404
    for amount in ("0", "-1", "1.001", "abc"):
        bad = await client.post("/invoices", json={"user_id": "u1", "amount": amount})
        assert bad.status_code == 422, amount
        assert bad.json()["detail"][0]["loc"][-1] == "amount"
    await deliver(transport, new_event("UserDeactivated", {"user_id": "u1"}, source="user"))
    closed = await client.post("/invoices", json={"user_id": "u1", "amount": "5"})
    assert closed.status_code == 409
    assert "deactivated" in closed.json()["detail"]


async def test_bad_invoice_input_gets_422_naming_the_field(
    client: httpx.AsyncClient, open_account: None
) -> None:
    nul = await client.post(
        "/invoices", json={"user_id": "u1", "amount": "5.00", "description": "a\x00b"}
    )
    assert (nul.status_code, nul.json()["detail"][0]["loc"]) == (422, ["body", "description"])
    account = await client.get("/accounts/u%001")
    assert (account.status_code, account.json()["detail"][0]["loc"]) == (422, ["path", "user_id"])


async def test_invoices_come_in_pages(client: httpx.AsyncClient, open_account: None) -> None:
    ids = [
        (await client.post("/invoices", json={"user_id": "u1", "amount": f"{n}.00"})).json()["id"]
        for n in range(1, 6)
    ]
    first = (await client.get("/invoices", params={"limit": 2})).json()
    rest = (await client.get("/invoices", params={"after": first[-1]["id"], "limit": 10})).json()
    assert [i["id"] for i in first + rest] == ids
    assert (await client.get("/invoices", params={"limit": 1001})).status_code == 422
    assert (await client.get("/invoices", params={"after": "nope"})).status_code == 404
