"""GET /admin/inbox: the events a consuming service has processed, paged and validated."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, ServiceSettings, Subscriptions, create_service
from eventkit.testing import async_wait_until, deliver, running
from eventkit.transports.memory import MemoryTransport
from sample_domain import THINGS, happened, things_roster


class Settings(ServiceSettings):
    SERVICE_NAME: str = "probe"
    PORT: int = 9999


def build(settings: Settings, transport: MemoryTransport) -> Any:
    subscriptions = Subscriptions()

    @subscriptions.on_message(THINGS)
    async def on_thing(event: Envelope, session: AsyncSession) -> None:
        pass

    return create_service(
        settings,
        things_roster("probe"),
        [],
        title="probe",
        subscriptions=subscriptions,
        transport=transport,
    )


@pytest.fixture
async def probe(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = MemoryTransport()
    async with running(build(Settings(DATABASE_URL=database_url), transport)) as client:
        client.event_transport = transport  # type: ignore[attr-defined]
        yield client


async def processed(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    async def listed() -> list[dict[str, Any]] | None:
        items = list((await client.get("/admin/inbox", params={"limit": 1000})).json())
        return items if len(items) >= count else None

    return await async_wait_until(listed, what=f"{count} events in the inbox")


async def test_the_inbox_lists_processed_events_with_when(probe: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    events = [happened(f"t{n}") for n in range(5)]
    for event in events:
        await deliver(probe.event_transport, THINGS, event)  # type: ignore[attr-defined]
    items = await processed(probe, 5)
    after = datetime.now(UTC)
    assert {item["event_id"] for item in items} == {str(event.id) for event in events}
    for item in items:
        assert (item["event_type"], item["stream"]) == ("Happened", THINGS)
        at = datetime.fromisoformat(item["processed_at"])
        assert at.tzinfo is not None and before <= at <= after
    order = [(item["processed_at"], item["event_id"]) for item in items]
    assert order == sorted(order)

    # `since`: at or after that time; with no zone it is UTC.
    later = await probe.get("/admin/inbox", params={"since": after.isoformat()})
    assert later.status_code == 200 and later.json() == []
    naive = before.replace(tzinfo=None).isoformat()
    assert len((await probe.get("/admin/inbox", params={"since": naive})).json()) == 5
    elsewhere = before.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert len((await probe.get("/admin/inbox", params={"since": elsewhere})).json()) == 5

    # Pages: `after` the last item's id, with the same `since`, continues.
    since = {"since": before.isoformat()}
    first = (await probe.get("/admin/inbox", params={**since, "limit": 2})).json()
    second = (
        await probe.get(
            "/admin/inbox", params={**since, "limit": 2, "after": first[-1]["event_id"]}
        )
    ).json()
    rest = (
        await probe.get("/admin/inbox", params={**since, "after": second[-1]["event_id"]})
    ).json()
    assert [*first, *second, *rest] == items


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 1001}, 422),
        ({"limit": "many"}, 422),
        ({"since": "yesterday"}, 422),
        ({"since": "2026-13-40T00:00:00"}, 422),
        ({"since": "0001-01-01T00:00:00+05:00"}, 422),  # out of range once in UTC
        ({"since": "9999-12-31T23:59:59-05:00"}, 422),
        ({"since": "0001-01-01T00:00:00"}, 200),
        ({"since": "9999-12-31T23:59:59"}, 200),
        ({"after": "x" * 101}, 422),
        ({"after": "nul\x00"}, 422),
        ({"after": "no-such-event"}, 404),
    ],
)
async def test_a_bad_parameter_is_a_4xx_never_a_5xx(
    probe: httpx.AsyncClient, params: dict[str, Any], status: int
) -> None:
    response = await probe.get("/admin/inbox", params=params)
    assert response.status_code == status, response.text


async def test_the_inbox_listing_is_an_admin_call(database_url: str) -> None:
    settings = Settings(DATABASE_URL=database_url, ADMIN_TOKEN="s3cret")
    async with running(build(settings, MemoryTransport())) as client:
        assert (await client.get("/admin/inbox")).status_code == 401
        right = await client.get("/admin/inbox", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and right.json() == []
