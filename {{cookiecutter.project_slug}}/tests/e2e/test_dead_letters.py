"""Bad messages on the real broker: each consumer of the stream dead-letters them with the
reason and keeps going; a replayed dead letter travels through the broker again."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from contracts import ROSTER, USER_EVENTS
from eventkit import new_event
from eventkit.testing import wait_until
from tests.e2e.services import Services

# publish_raw sends to the user stream: these are the services that read it.
CONSUMERS = [spec.name for spec in ROSTER.subscribers(USER_EVENTS)]
TIMEOUT = 60.0


def letters(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/dlq")
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


@pytest.fixture
def consumers(clients: dict[str, httpx.Client]) -> dict[str, httpx.Client]:
    return {name: clients[name] for name in CONSUMERS}


def held(client: httpx.Client, event_type: str) -> float:
    """How often the service has held events of `event_type` (it does not know the type)."""
    labels = r'\{[^}]*type="' + re.escape(event_type) + r'"[^}]*\}'
    pattern = rf"^eventkit_events_held_total{labels} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, client.get("/metrics").text, re.M))


def test_bad_messages_are_dead_lettered_and_the_consumer_keeps_going(
    consumers: dict[str, httpx.Client], services: Services, publish_raw: Any
) -> None:
    marker = uuid.uuid4().hex
    invalid = new_event("UserCreated", {"user_id": marker}, source="e2e")  # no name, email
    # A type no consumer knows yet (a publisher deployed first): listed at once, and held.
    unknown = new_event("UserTeleported", {"user_id": marker}, source="e2e")
    publish_raw(
        (f"not json {marker}".encode(), marker),
        (invalid.to_bytes(), marker),
        (unknown.to_bytes(), marker),
    )
    for name, client in consumers.items():

        def reasons(client: httpx.Client = client) -> dict[str, str]:
            found = {}
            for letter in letters(client):
                if marker in letter["payload"]:
                    kind = {str(invalid.id): "invalid", str(unknown.id): "unknown"}.get(
                        letter["event_id"], "malformed"
                    )
                    found[kind] = f"{letter['attempts']}:{letter['error']}"
            return found if len(found) >= 3 else {}

        got = wait_until(reasons, timeout=TIMEOUT, what=f"{name} to dead-letter the messages")
        assert got["malformed"].startswith("0:not valid JSON"), (name, got)
        assert got["invalid"].startswith("0:invalid UserCreated data"), (name, got)
        assert got["unknown"].startswith("0:unknown event type 'UserTeleported'; held: "), got

        def holds(client: httpx.Client = client) -> bool:
            return held(client, "UserTeleported") > 0

        wait_until(
            holds,
            timeout=TIMEOUT,
            what=f"{name} to hold the event of a type it does not know yet",
        )

    # The consumers kept going: a good event after the bad ones still fans out.
    created = services.new_user("after poison")
    wait_until(
        lambda: services.account_of(created["id"]),
        timeout=TIMEOUT,
        what="billing to apply the event after the bad ones",
    )


def test_replaying_a_dead_letter_sends_it_through_the_broker_again(
    consumers: dict[str, httpx.Client], publish_raw: Any
) -> None:
    consumer = consumers[CONSUMERS[0]]
    invalid = new_event("UserCreated", {"user_id": uuid.uuid4().hex}, source="e2e")
    publish_raw((invalid.to_bytes(), "k"))

    def failed_at() -> str | None:
        matches = [d["failed_at"] for d in letters(consumer) if d["event_id"] == str(invalid.id)]
        return matches[0] if matches else None

    first = wait_until(failed_at, timeout=TIMEOUT, what="the dead letter to appear")
    replayed = consumer.post("/dlq/replay", json={"event_ids": [str(invalid.id)]})
    assert replayed.json()["replayed"] == 1
    # Still invalid, so it comes back, dead-lettered anew.
    wait_until(
        lambda: (again := failed_at()) is not None and again != first,
        timeout=TIMEOUT,
        what="the replayed event to be dead-lettered again",
    )
