"""Two of every service, with a consumer replica killed mid-stream.

Run with `make e2e-replicas` against `make local-up REPLICAS=2` on PostgreSQL
(DATABASE_URL=postgresql+asyncpg://.../<db>_{service}). Counts are deltas from the start.
Replica k of a service answers on its port + 100 * k (dev_tools/local.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from contracts import ROSTER
from eventkit.settings import admin_token
from eventkit.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0
SIGNUPS, CHANGED, CHANGES_EACH = 200, 100, 3


def replica_url(name: str, k: int) -> str:
    parts = urlsplit(ROSTER.url(name))
    host = f"{parts.hostname}:{(parts.port or 80) + 100 * k}"
    return urlunsplit(parts._replace(netloc=host))


@pytest.fixture(scope="module")
def replicas() -> dict[str, list[httpx.Client]]:
    token = admin_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    found = {
        name: [
            httpx.Client(base_url=replica_url(name, k), timeout=10, headers=headers) for k in (0, 1)
        ]
        for name in ROSTER.names
    }
    for name, pair in found.items():
        for client in pair:
            try:
                assert client.get("/health").status_code == 200
            except (httpx.HTTPError, AssertionError):
                pytest.fail(
                    f"{name} has no second replica at {client.base_url}: make local-up REPLICAS=2"
                )
    return found


def publish_counts(client: httpx.Client) -> tuple[int, int]:
    """(events the replica published once, events it sent again after a broker outage it
    saw), from one read of its metrics. An outage is three missed pings: on a busy machine,
    a slow broker is one; consumers drop the resends as duplicates. The user service
    publishes user.events only."""
    text = client.get("/metrics").text
    pattern = r'^eventkit_events_published_total\{[^}]*stream="user\.events"[^}]*\}\s+(\S+)$'
    sent = sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))
    found = re.search(r"^eventkit_events_resent_total\s+(\S+)$", text, re.MULTILINE)
    resent = int(float(found.group(1))) if found else 0
    return int(sent) - resent, resent


def published(client: httpx.Client) -> int:
    return publish_counts(client)[0]


def resent(client: httpx.Client) -> int:
    return publish_counts(client)[1]


def dead_letters(replicas: dict[str, list[httpx.Client]]) -> int:
    """Dead letters of every consumer (its replicas share a database), a page at a time."""
    total = 0
    for spec in ROSTER.consumers:
        after = 0
        while page := replicas[spec.name][0].get("/dlq", params={"after": after}).json():
            total += len(page)
            after = page[-1]["position"]
    return total


def stats(replicas: dict[str, list[httpx.Client]]) -> dict[str, Any]:
    body: dict[str, Any] = replicas["analytics"][0].get("/stats").json()
    return body


def test_two_of_everything_with_a_kill_apply_every_event_exactly_once(
    replicas: dict[str, list[httpx.Client]],
) -> None:
    users, billing, notification = (
        replicas["user"],
        replicas["billing"][0],
        replicas["notification"][0],
    )
    before = stats(replicas)
    published_before = sum(published(c) for c in users)
    resent_before = sum(resent(c) for c in users)
    dead_before = dead_letters(replicas)

    ids = []
    for n in range(SIGNUPS):  # spread over both user replicas
        email = f"rep-{uuid.uuid4().hex[:10]}@example.com"
        response = users[n % 2].post("/users", json={"name": f"R{n}", "email": email})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    last_email: dict[str, str] = {}
    killed = threading.Event()

    def kill_one_of_each_consumer() -> None:
        for spec in ROSTER.consumers:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "supervisor.supervisorctl",
                    "-c",
                    str(ROOT / "var/supervisord.conf"),
                    "signal",
                    "KILL",
                    f"{spec.name}-1",
                ],
                check=True,
                capture_output=True,
            )
        killed.set()

    for round_ in range(CHANGES_EACH):
        for n, user_id in enumerate(ids[:CHANGED]):
            email = f"rep-{uuid.uuid4().hex[:10]}@example.com"
            response = users[(n + round_) % 2].patch(f"/users/{user_id}", json={"email": email})
            assert response.status_code == 200, response.text
            last_email[user_id] = email
            if round_ == 1 and n == CHANGED // 2:
                kill_one_of_each_consumer()  # mid-stream
    assert killed.is_set()
    # Start again whatever is not running, as a person would.
    subprocess.run(
        [sys.executable, "-m", "dev_tools", "local", "up"],
        check=True,
        capture_output=True,
        env={**os.environ, "REPLICAS": "2"},
    )

    changes = CHANGED * CHANGES_EACH
    wait_until(
        lambda: (
            stats(replicas)["events_by_type"].get("EmailChanged", 0)
            - before["events_by_type"].get("EmailChanged", 0)
            >= changes
            and stats(replicas)["users_created"] - before["users_created"] >= SIGNUPS
        ),
        timeout=TIMEOUT,
        interval=0.5,
        what="analytics to count every event",
    )

    def billing_behind() -> list[str]:
        """Users whose account is missing, or does not hold their last email yet."""
        behind = []
        for user_id in ids:
            account = billing.get(f"/accounts/{user_id}")
            wanted = last_email.get(user_id)
            if account.status_code != 200 or (wanted and account.json()["email"] != wanted):
                behind.append(user_id)
        return behind

    wait_until(
        lambda: not billing_behind(),
        timeout=TIMEOUT,
        interval=0.5,
        what="billing to hold every last email",
    )
    # An event resent after an outage a replica saw is published again a moment later.
    wait_until(
        lambda: sum(published(c) for c in users) - published_before >= SIGNUPS + changes,
        timeout=30,
        interval=0.5,
        what="the user replicas to publish every event",
    )
    after = stats(replicas)
    welcomes = [
        [n["kind"] for n in notification.get("/notifications", params={"user_id": i}).json()].count(
            "welcome"
        )
        for i in ids
    ]
    report = {
        "events in": SIGNUPS + changes,
        "analytics users_created": after["users_created"] - before["users_created"],
        "analytics EmailChanged": after["events_by_type"].get("EmailChanged", 0)
        - before["events_by_type"].get("EmailChanged", 0),
        "welcomes": sum(welcomes),
        "published by the user replicas": sum(published(c) for c in users) - published_before,
        "dead letters": dead_letters(replicas) - dead_before,
    }
    print(report, "; resent after an outage:", sum(resent(c) for c in users) - resent_before)
    assert report == {
        "events in": SIGNUPS + changes,
        "analytics users_created": SIGNUPS,
        "analytics EmailChanged": changes,
        "welcomes": SIGNUPS,
        "published by the user replicas": SIGNUPS + changes,
        "dead letters": 0,
    }
    assert welcomes == [1] * SIGNUPS
