"""The user service's HTTP API, with the broker replaced by the in-process transport."""

from collections.abc import AsyncIterator

import httpx
import pytest

from eventkit import Envelope
from eventkit.testing import async_wait_until, running
from eventkit.transports.memory import MemoryTransport
from user_service.main import create_app
from user_service.settings import Settings


async def test_create_then_get_a_user(client: httpx.AsyncClient) -> None:
    created = await client.post("/users", json={"name": "Ada", "email": "ada@example.com"})
    assert created.status_code == 201
    body = created.json()
    assert body | {"id": "-"} == {
        "id": "-",
        "name": "Ada",
        "email": "ada@example.com",
        "status": "active",
        "version": 1,
    }
    fetched = await client.get(f"/users/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_creating_a_user_publishes_user_created(
    client: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    body = {"name": "Bo", "email": "bo@example.com", "locale": "pt-BR"}
    user = (await client.post("/users", json=body)).json()

    async def published() -> list[Envelope]:
        return [Envelope.from_bytes(body) for _, body in transport.published]

    events = await async_wait_until(published, what="the outbox relay to publish")
    assert [(e.type, e.version, e.data) for e in events] == [
        ("UserCreated", 2, {"user_id": user["id"], **body})
    ]
    assert transport.published[0][0] == "user.events"
    assert events[0].source == "user"


async def test_a_taken_email_is_a_conflict(client: httpx.AsyncClient) -> None:
    first = await client.post("/users", json={"name": "Cy", "email": "cy@example.com"})
    again = await client.post("/users", json={"name": "Cy2", "email": "CY@example.com"})
    assert first.status_code == 201
    assert again.status_code == 409
    assert "cy@example.com" in again.json()["detail"].lower()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Di"}, "email"),
        ({"name": "Di", "email": "not-an-email"}, "email"),
        ({"name": "", "email": "di@example.com"}, "name"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, str], field: str
) -> None:
    response = await client.post("/users", json=body)
    assert response.status_code == 422
    assert [e["loc"][-1] for e in response.json()["detail"]] == [field]


async def test_an_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/users/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


async def test_health_ready_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).status_code == 200
    await client.post("/users", json={"name": "Ed", "email": "ed@example.com"})
    metrics = (await client.get("/metrics")).text
    assert "eventkit_events_published_total" in metrics


async def test_a_publisher_stays_ready_while_the_broker_is_down(
    client: httpx.AsyncClient, transport: MemoryTransport
) -> None:
    await transport.stop()
    response = await client.get("/ready")
    # Its writes reach the outbox meanwhile; /ready says how the broker is.
    assert response.status_code == 200
    assert (response.json()["database"], response.json()["broker"]) == ("up", "down")
    created = await client.post("/users", json={"name": "Di", "email": "di@example.com"})
    assert created.status_code == 201


@pytest.mark.parametrize("name", ["A\x00b", "Ada\r\nBcc: x@y.z", "A\u2028B", ""])
async def test_a_name_with_control_characters_is_refused(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post("/users", json={"name": name, "email": "nul@example.com"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


async def test_out_of_range_numbers_and_odd_ids_get_422_not_500(client: httpx.AsyncClient) -> None:
    user = (await client.post("/users", json={"name": "Al", "email": "al@example.com"})).json()
    huge = await client.get(f"/users/{user['id']}", params={"version": 10**20})
    assert (huge.status_code, huge.json()["detail"][0]["loc"]) == (422, ["query", "version"])
    nul = await client.get("/users/a%00b")
    assert (nul.status_code, nul.json()["detail"][0]["loc"]) == (422, ["path", "user_id"])


async def test_made_up_http_methods_share_one_metrics_label(client: httpx.AsyncClient) -> None:
    for method in ("FOO", "BAR", "BAZ"):
        assert (await client.request(method, "/health")).status_code == 405
    metrics = (await client.get("/metrics")).text
    assert 'method="other"' in metrics
    assert "FOO" not in metrics and "BAZ" not in metrics


async def test_a_body_above_the_size_limit_gets_413_and_stores_nothing(
    database_url: str, transport: MemoryTransport
) -> None:
    settings = Settings(DATABASE_URL=database_url, MAX_REQUEST_BODY_BYTES=2000)
    async with running(create_app(settings, transport=transport)) as client:
        too_big = await client.post("/users", json={"name": "A" * 3000, "email": "a@example.com"})
        assert too_big.status_code == 413
        assert too_big.json() == {"detail": "request body above 2000 bytes"}

        async def unannounced() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            yield b'{"name": "'
            for _ in range(10):
                yield b"B" * 500
            yield b'", "email": "b@example.com"}'

        streamed = await client.post(
            "/users", content=unannounced(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["detail"] == "request body above 2000 bytes"
        fits = await client.post("/users", json={"name": "C", "email": "c@example.com"})
        assert fits.status_code == 201

        async def names() -> list[str]:
            return [Envelope.from_bytes(body).data["name"] for _, body in transport.published]

        assert await async_wait_until(names, what="the relay to publish") == ["C"]


async def test_the_default_body_limit_refuses_megabytes(client: httpx.AsyncClient) -> None:
    huge = await client.post("/users", json={"name": "x" * 5_000_000, "email": "h@example.com"})
    assert huge.status_code == 413
    assert huge.json()["detail"].startswith("request body above")
