"""What every phase shares: the roster's services, their /metrics, and the broker."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from contracts import ROSTER, USER_EVENTS
from eventkit import ServiceSettings, new_event
from eventkit.transports import Outgoing, Transport, create_transport

STREAM = USER_EVENTS
CREATED = "UserCreated"
PRODUCER = ROSTER.producer(STREAM).name
# Every service that applies the user stream: the read models a sign-up fans out to.
READERS = [spec.name for spec in ROSTER.subscribers(STREAM)]
# How to ask a read model whether it has one user: the path (with {id}) and a test of the
# 200 answer. A reader without an entry is followed through its counter (fanout.py).
VIEWS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "billing": ("/accounts/{id}", lambda account: True),
    "notification": ("/notifications?user_id={id}", bool),
}
COUNTER = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)", re.MULTILINE)


def url(name: str) -> str:
    return ROSTER.url(name)


def counter(metrics_text: str, name: str, stream: str = STREAM, type_: str = CREATED) -> int:
    """The value of one labelled series of a Prometheus counter in /metrics text."""
    total = 0.0
    for metric, labels, value in COUNTER.findall(metrics_text):
        if metric == name and f'stream="{stream}"' in labels and f'type="{type_}"' in labels:
            total += float(value)
    return int(total)


async def get(http: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
    """GET, once more after a connection the server had just closed (keep-alive races)."""
    for attempt in range(3):
        try:
            return await http.get(path, **kwargs)
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def read_counter(http: httpx.AsyncClient, service: str, name: str) -> int:
    response = await get(http, f"{url(service)}/metrics")
    response.raise_for_status()
    return counter(response.text, name)


async def consumed(http: httpx.AsyncClient, service: str) -> int:
    return await read_counter(http, service, "eventkit_events_consumed_total")


async def published(http: httpx.AsyncClient) -> int:
    return await read_counter(http, PRODUCER, "eventkit_events_published_total")


async def applied_all(
    http: httpx.AsyncClient, before: dict[str, int], count: int, stall: float
) -> dict[str, float]:
    """Wait until every reader has applied `count` UserCreated more than `before` (its counts
    then); when each had (time.perf_counter()). Raises TimeoutError once no reader has
    applied any more for `stall` seconds: slow is measured, stuck is not."""
    done: dict[str, float] = {}
    applied = dict.fromkeys(READERS, 0)
    moved = time.monotonic()
    while len(done) < len(READERS):
        await asyncio.sleep(0.1)  # /metrics costs the consumers too: not too often
        for name in READERS:
            if name in done:
                continue
            now = await consumed(http, name) - before[name]
            if now > applied[name]:
                applied[name], moved = now, time.monotonic()
            if now >= count:
                done[name] = time.perf_counter()
        if len(done) < len(READERS) and time.monotonic() - moved > stall:
            raise TimeoutError(
                f"nothing applied for {stall:.0f}s; of {count}, the readers had {applied}"
            )
    return done


async def shows(http: httpx.AsyncClient, service: str, user_id: str) -> bool:
    """Whether `service`'s read model has the user (a service with an entry in VIEWS)."""
    path, test = VIEWS[service]
    response = await get(http, url(service) + path.format(id=user_id))
    return response.status_code == 200 and test(response.json())


async def not_ready(http: httpx.AsyncClient) -> list[str]:
    """Each service of the roster whose /ready is not 200, with what it answered."""
    failed = []
    for name in ROSTER.names:
        try:
            status: object = (await http.get(f"{url(name)}/ready")).status_code
        except httpx.HTTPError as exc:
            status = repr(exc)
        if status != 200:
            failed.append(f"{name} at {url(name)}: {status}")
    return failed


def settings(name: str = "bench") -> ServiceSettings:
    """The stack's broker (BROKER, BROKER_URL) and stream settings, as the services see them."""
    return ServiceSettings(SERVICE_NAME=name, PORT=0, DATABASE_URL="sqlite://")


def transport(name: str) -> Transport:
    """A transport of its own on the stack's broker."""
    return create_transport(settings(name))


def broker_kind() -> str:
    return settings().broker


def user_created(run: str, n: int) -> tuple[bytes, str, str]:
    """A valid UserCreated envelope of a new user, as the producer would publish it."""
    user_id = str(uuid.uuid4())
    data = {"user_id": user_id, "name": f"bench {n}", "email": f"bench-{run}-{n}@example.com"}
    event = new_event(CREATED, data, source="bench", aggregate_id=user_id, sequence=1)
    return event.to_bytes(), user_id, CREATED


async def publish_all(
    transport: Transport, stream: str, messages: list[tuple[bytes, str, str]], in_flight: int
) -> float:
    """Publish every (body, key, type) with up to `in_flight` awaiting the broker; seconds."""
    gate = asyncio.Semaphore(in_flight)

    async def one(body: bytes, key: str, event_type: str) -> None:
        async with gate:
            await transport.publish(
                Outgoing(stream=stream, body=body, key=key, event_type=event_type)
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(*m) for m in messages))
    return time.perf_counter() - started
