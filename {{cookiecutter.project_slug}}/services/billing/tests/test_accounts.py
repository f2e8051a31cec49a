"""Billing's accounts read model, fed user events through FastStream's test broker."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from billing_service.main import create_app
from billing_service.settings import Settings
from contracts import USER_EVENTS
from contracts.testing import deliver
from eventkit import Envelope, new_event
from eventkit import rebuild as rebuild_module
from eventkit.testing import running
from eventkit.transports import Transport
from eventkit.transports.memory import MemoryTransport


def created(user_id: str = "u1") -> Envelope:
    data = {"user_id": user_id, "name": "Ada", "email": "ada@example.com"}
    return new_event("UserCreated", data, source="user")


async def test_an_account_appears_once_its_user_is_created(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    assert (await client.get("/accounts/u1")).status_code == 404
    await deliver(transport, created())
    response = await client.get("/accounts/u1")
    assert response.status_code == 200
    assert response.json() == {
        "user_id": "u1",
        "email": "ada@example.com",
        "status": "active",
        "invoices": 0,
        "invoiced_total": "0.00",
    }


async def test_email_and_status_follow_the_user(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    await deliver(transport, created())
    await deliver(
        transport,
        new_event("EmailChanged", {"user_id": "u1", "new_email": "n@x.io"}, source="user"),
    )
    await deliver(transport, new_event("UserDeactivated", {"user_id": "u1"}, source="user"))
    account = (await client.get("/accounts/u1")).json()
    assert (account["email"], account["status"]) == ("n@x.io", "deactivated")


async def test_a_duplicate_user_created_changes_nothing(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    event = created()
    await deliver(transport, event)
    await deliver(transport, event)
    assert (await client.get("/accounts/u1")).status_code == 200


async def test_a_version_1_user_created_is_upcast_and_applied(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    v1 = new_event(
        "UserCreated", {"user_id": "old", "name": "Ada", "email": "a@x.io"}, source="user"
    )
    assert v1.version == 1 and "locale" not in v1.data
    await deliver(transport, v1)
    assert (await client.get("/accounts/old")).json()["email"] == "a@x.io"


async def test_a_consumer_is_not_ready_while_its_broker_is_down(database_url: str) -> None:
    transport = MemoryTransport()  # one whose broker can go down
    app = create_app(Settings(DATABASE_URL=database_url), transport=transport)
    async with running(app) as client:
        await transport.stop()
        response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert (body["failed"], body["broker"], body["database"]) == (["broker"], "down", "up")
    assert "broker" in body["detail"]


async def test_accounts_answer_503_after_a_failed_rebuild_until_one_succeeds(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [created("u1"), created("u2")]
    feed = [
        {"position": n, "stream": USER_EVENTS, "event": e.model_dump(mode="json")}
        for n, e in enumerate(users, start=1)
    ]
    attempts = {"n": 0}

    async def pages(
        client: httpx.AsyncClient, url: str, page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        attempts["n"] += 1
        yield feed[:1]
        if attempts["n"] == 1:
            raise httpx.ConnectError("the user service went away")
        yield feed[1:]

    monkeypatch.setattr(rebuild_module, "feed_pages", pages)
    transport = MemoryTransport()
    app = create_app(Settings(DATABASE_URL=database_url), transport=transport)
    async with running(app) as client:
        for user in users:
            await deliver(transport, user)
        assert (await client.get("/accounts/u2")).status_code == 200
        assert (await client.post("/admin/rebuild")).status_code == 503
        for reply in (
            await client.get("/accounts/u1"),
            await client.get("/accounts/u2"),  # not replayed: it would answer 404
            await client.post("/invoices", json={"user_id": "u2", "amount": "5"}),
        ):
            assert reply.status_code == 503
            assert "the user service went away" in reply.json()["detail"]
        ready = await client.get("/ready")
        assert "the user service went away" in ready.json()["read_model"]
        assert (await client.post("/admin/rebuild")).status_code == 200
        assert (await client.get("/accounts/u2")).status_code == 200
        assert (await client.get("/ready")).json()["read_model"] == "whole"
