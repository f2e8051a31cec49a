"""/metrics shows each hop: published by the user stream's producer, consumed and
dead-lettered by each service that reads it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from contracts import ROSTER, USER_EVENTS
from eventkit.testing import wait_until

PRODUCER = ROSTER.producer(USER_EVENTS).name
CONSUMERS = [spec.name for spec in ROSTER.subscribers(USER_EVENTS)]


def total(client: httpx.Client, metric: str) -> float:
    """The sum of a counter over all its label sets."""
    text = client.get("/metrics").text
    pattern = "^" + re.escape(metric) + r"(?:\{[^}]*\})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def test_metrics_count_published_consumed_and_dead_lettered(
    clients: dict[str, httpx.Client],
    new_user: Callable[[str], dict[str, Any]],
    publish_raw: Callable[..., None],
) -> None:
    new_user("metered")
    publish_raw((f"poison {uuid.uuid4().hex}".encode(), "m"))
    wait_until(
        lambda: total(clients[PRODUCER], "eventkit_events_published_total") > 0,
        timeout=30,
        what=f"{PRODUCER} to count a published event",
    )
    for name in CONSUMERS:
        client = clients[name]
        for metric in ("eventkit_events_consumed_total", "eventkit_events_dead_lettered_total"):

            def counted(client: httpx.Client = client, metric: str = metric) -> bool:
                return total(client, metric) > 0

            wait_until(
                counted,
                timeout=30,
                what=f"{name} to report {metric} > 0",
            )
        assert total(client, "http_requests_total") > 0
