"""RabbitMQ restarted while events are in flight: durable queues and persistent messages
keep every one of them."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx

from eventkit.testing import wait_until

TIMEOUT = 120.0


def count(stats: httpx.Client) -> int:
    try:
        return int(stats.get("/stats").json()["users_created"])
    except httpx.TransportError:
        return -1


def test_a_broker_restart_mid_stream_loses_nothing(
    stack: Any, clients: dict[str, httpx.Client]
) -> None:
    stats = clients["analytics"]
    last = -2

    def unchanged() -> int | None:
        nonlocal last
        now = count(stats)
        if now == last and now >= 0:
            return now + 1  # truthy even at 0
        last = now
        return None

    before = wait_until(unchanged, timeout=TIMEOUT, interval=1.0, what="analytics to settle") - 1
    ids: list[str] = []

    def write() -> None:
        for n in range(300):
            email = f"restart-{n}-{uuid.uuid4().hex[:6]}@example.com"
            response = clients["user"].post("/users", json={"name": f"r{n}", "email": email})
            assert response.status_code == 201
            ids.append(response.json()["id"])

    writer = threading.Thread(target=write)
    writer.start()
    wait_until(
        lambda: count(stats) >= before + 30,
        timeout=TIMEOUT,
        what="events to be flowing",
    )
    stack.restart(stack.broker())
    writer.join(timeout=TIMEOUT)
    assert len(ids) == 300
    wait_until(
        lambda: count(stats) == before + 300,
        timeout=TIMEOUT,
        what="analytics to count all 300 users after the restart",
    )
    billing = clients["billing"]
    wait_until(
        lambda: all(billing.get(f"/accounts/{i}").status_code == 200 for i in ids),
        timeout=TIMEOUT,
        what="billing to hold all 300 accounts",
    )
