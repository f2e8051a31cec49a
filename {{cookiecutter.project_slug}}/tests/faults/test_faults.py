"""Real faults against the local stack: nothing lost, nothing applied twice, no poison jam.

Run with `make faults` after `make local-up`. Counts are deltas from the start of each
test, so earlier data is fine, but nothing else may write to the stack meanwhile.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts import ROSTER, USER_EVENTS
from eventkit import new_event
from eventkit.testing import wait_until

TIMEOUT = 90.0
NewUser = Callable[[str], dict[str, Any]]
PRODUCER = ROSTER.producer(USER_EVENTS).name
CONSUMERS = [spec.name for spec in ROSTER.subscribers(USER_EVENTS)]


def readiness(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    """/ready's status and body; (0, {}) while the service does not answer."""
    try:
        response = client.get("/ready")
    except httpx.TransportError:
        return 0, {}
    return response.status_code, response.json()


def users_created(clients: dict[str, httpx.Client]) -> int:
    """Analytics' count, or -1 while it does not answer (it may be restarting)."""
    try:
        return int(clients["analytics"].get("/stats").json()["users_created"])
    except httpx.TransportError:
        return -1


def settled(clients: dict[str, httpx.Client]) -> int:
    """users_created once it stops moving: nothing of an earlier test still in flight."""
    last = -2

    def unchanged() -> int | None:
        nonlocal last
        now = users_created(clients)
        if now == last and now >= 0:
            return now + 1  # truthy even at 0
        last = now
        return None

    return wait_until(unchanged, timeout=TIMEOUT, interval=1.0, what="analytics to settle") - 1


def assert_fanned_out(
    clients: dict[str, httpx.Client], ids: list[str], analytics_total: int
) -> None:
    """Every read model holds every user in `ids`; analytics counted exactly `analytics_total`."""
    billing, notification = clients["billing"], clients["notification"]
    wait_until(
        lambda: users_created(clients) >= analytics_total,
        timeout=TIMEOUT,
        what=f"analytics to count {analytics_total} users",
    )

    def missing() -> dict[str, int]:
        return {
            "billing": sum(billing.get(f"/accounts/{i}").status_code != 200 for i in ids),
            "notification": sum(
                len(notification.get("/notifications", params={"user_id": i}).json()) != 1
                for i in ids
            ),
        }

    wait_until(
        lambda: missing() == {"billing": 0, "notification": 0},
        timeout=TIMEOUT,
        what=f"every read model to hold each of {len(ids)} users exactly once",
    )
    assert users_created(clients) == analytics_total, "analytics counted an event twice"


def retries_of(client: httpx.Client) -> int:
    """MAX_RETRIES as the running service has it (its /metrics), not as this process's
    environment says: the stack may have been started from another shell. Fails when its
    retries would outlast the wait, naming the settings the README starts it with."""
    line = re.search(r"^eventkit_retry_info\{(.*)\}", client.get("/metrics").text, re.M)
    assert line, "the service shows no eventkit_retry_info on /metrics"
    policy = dict(re.findall(r'(\w+)="([^"]*)"', line.group(1)))
    retries, delays = int(policy["max_retries"]), policy["retry_delays_seconds"].split(",")
    waited = sum(float(delays[min(n, len(delays) - 1)]) for n in range(retries))
    if waited > TIMEOUT / 2:
        pytest.fail(
            f"the stack retries {retries} times over {waited:g}s (MAX_RETRIES={retries}, "
            f"RETRY_DELAYS_SECONDS={policy['retry_delays_seconds']}); start it with "
            "MAX_RETRIES=3 RETRY_DELAYS_SECONDS=0.2,0.5 make local-up"
        )
    return retries


def sign_up(user: httpx.Client, count: int, label: str) -> list[str]:
    ids = []
    for n in range(count):
        email = f"{label}-{n}-{uuid.uuid4().hex[:6]}@example.com"
        response = user.post("/users", json={"name": f"{label} {n}", "email": email})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_writes_succeed_while_the_broker_is_down_and_arrive_after(
    stack: Any, clients: dict[str, httpx.Client]
) -> None:
    """The producer takes writes into its outbox and stays ready, saying the broker is down;
    a consumer is not ready without its broker."""
    before = settled(clients)
    with stack.broker_down():
        ids = sign_up(clients[PRODUCER], 100, "outage")
        for name in [PRODUCER, *CONSUMERS]:
            # A publisher needs only its database; a consumer needs its broker too.
            expected = 200 if name == PRODUCER else 503

            def down(name: str = name, expected: int = expected) -> bool:
                status, body = readiness(clients[name])
                return status == expected and body.get("broker") == "down"

            wait_until(
                down,
                timeout=TIMEOUT,
                what=f"{name} to answer {expected} on /ready, reporting the broker down",
            )
    assert_fanned_out(clients, ids, before + 100)


def test_a_consumer_killed_mid_stream_applies_every_event_exactly_once(
    stack: Any, clients: dict[str, httpx.Client]
) -> None:
    before = settled(clients)
    ids: list[str] = []
    writer = threading.Thread(target=lambda: ids.extend(sign_up(clients["user"], 500, "kill")))
    writer.start()
    wait_until(
        lambda: users_created(clients) >= before + 50,
        timeout=TIMEOUT,
        what="analytics to be part-way through",
    )
    stack.kill("analytics")  # no ack for what it was doing; supervisord restarts it
    writer.join(timeout=TIMEOUT)
    assert len(ids) == 500
    assert_fanned_out(clients, ids, before + 500)


def test_the_same_event_twice_is_applied_once(
    clients: dict[str, httpx.Client], publish_raw: Callable[..., None]
) -> None:
    before = settled(clients)
    user_id = str(uuid.uuid4())
    data = {"user_id": user_id, "name": "Twice", "email": f"twice-{user_id[:8]}@example.com"}
    event = new_event("UserCreated", data, source="user")
    publish_raw((event.to_bytes(), user_id), (event.to_bytes(), user_id))
    assert_fanned_out(clients, [user_id], before + 1)


def test_a_poison_event_is_dead_lettered_the_rest_flow_and_replay_applies_it_once(
    clients: dict[str, httpx.Client], publish_raw: Callable[..., None]
) -> None:
    before = settled(clients)
    ghost = str(uuid.uuid4())
    poison = new_event(
        "EmailChanged", {"user_id": ghost, "new_email": "ghost@example.com"}, source="user"
    )
    good = []
    for n in range(100):
        user_id = str(uuid.uuid4())
        data = {"user_id": user_id, "name": f"good {n}", "email": f"good-{user_id[:8]}@x.io"}
        good.append(new_event("UserCreated", data, source="user"))
    messages = [(e.to_bytes(), e.data["user_id"]) for e in good]
    publish_raw(*messages[:50], (poison.to_bytes(), ghost), *messages[50:])
    assert_fanned_out(clients, [e.data["user_id"] for e in good], before + 100)

    attempts = retries_of(clients["billing"]) + 1  # the stack's, then the dead letters
    for name in ("billing", "notification"):  # both need the user to exist first
        client = clients[name]

        def letter(client: httpx.Client = client) -> dict[str, Any] | None:
            found = [d for d in client.get("/dlq").json() if d["event_id"] == str(poison.id)]
            return found[0] if found else None

        dead = wait_until(letter, timeout=TIMEOUT, what=f"{name} to dead-letter the poison event")
        assert dead["attempts"] == attempts
        assert "unknown" in dead["error"]

    # Fix the fault (the user appears), then replay: applied once, however often replayed.
    created = new_event(
        "UserCreated", {"user_id": ghost, "name": "Ghost", "email": "g@example.com"}, source="user"
    )
    publish_raw((created.to_bytes(), ghost))
    assert_fanned_out(clients, [ghost], before + 101)
    for name in ("billing", "notification"):
        replay = clients[name].post("/dlq/replay", json={"event_ids": [str(poison.id)]})
        assert replay.json()["replayed"] == 1
    wait_until(
        lambda: clients["billing"].get(f"/accounts/{ghost}").json()["email"] == "ghost@example.com",
        timeout=TIMEOUT,
        what="billing to apply the replayed EmailChanged",
    )
    publish_raw((poison.to_bytes(), ghost))  # a late duplicate changes nothing

    def kinds() -> list[str]:
        sent = clients["notification"].get("/notifications", params={"user_id": ghost}).json()
        return sorted(n["kind"] for n in sent)

    wait_until(
        lambda: kinds() == ["email_changed", "welcome"],
        timeout=TIMEOUT,
        what="one email_changed notification for the replayed event",
    )
    assert all(d["event_id"] != str(poison.id) for d in clients["billing"].get("/dlq").json())
