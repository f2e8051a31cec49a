"""A short scenario against the running stack: sign up a few users, watch them fan out.

    python -m dev_tools demo [--users 5] [--timeout 30]

Creates users through the service that publishes the user stream, waits until every
service of the roster that subscribes to it has applied every one of them (its
`eventkit_events_consumed_total` on /metrics, and its read model where the demo knows how
to show one), then prints what each read model holds. Exits 1, naming the service and what
it is missing, if the fan-out does not finish in time; exits 1 with one line if the stack is
not running.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from contracts import ROSTER, USER_EVENTS

NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]
CREATED = "UserCreated"
# What a person looks at in a read model, per user: the path (with {id}) and a line from its
# answer. A subscriber without an entry here is shown by its counter alone.
VIEWS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "billing": ("/accounts/{id}", lambda a: f"{a['status']}, {a['invoices']} invoices"),
    "notification": (
        "/notifications?user_id={id}",
        lambda sent: ", ".join(n["kind"] for n in sent),
    ),
}


def applied(http: httpx.Client, stream: str = USER_EVENTS, event_type: str = CREATED) -> int:
    """This service's eventkit_events_consumed_total of one stream and type."""
    pattern = re.compile(r"^eventkit_events_consumed_total\{([^}]*)\}\s+(\S+)$", re.MULTILINE)
    return int(
        sum(
            float(value)
            for labels, value in pattern.findall(http.get("/metrics").text)
            if f'stream="{stream}"' in labels and f'type="{event_type}"' in labels
        )
    )


def view(http: httpx.Client, service: str, user_id: str) -> str | None:
    """The service's read model of one user as a line, or None while it has nothing."""
    if service not in VIEWS:
        return "applied"
    path, line = VIEWS[service]
    response = http.get(path.format(id=user_id))
    return line(response.json()) if response.status_code == 200 and response.json() else None


def not_running(clients: dict[str, httpx.Client]) -> list[str]:
    """The services that do not answer at their <NAME>_URL."""
    down = []
    for name, http in clients.items():
        try:
            http.get("/health")
        except httpx.TransportError:
            down.append(name)
    return down


def main(argv: list[str]) -> int:
    try:
        return run(argv)
    except httpx.TransportError as exc:  # a service stopped answering while the demo ran
        sys.exit(f"demo: lost the stack ({exc.request.url}: {exc}); is it still running?")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    clients = {name: httpx.Client(base_url=ROSTER.url(name), timeout=10) for name in ROSTER.names}
    if down := not_running(clients):
        print(
            f"demo: the stack is not running ({', '.join(down)} did not answer): start it with "
            "`make local-up`, or `make dev` in another terminal, then run `make demo` again",
            file=sys.stderr,
        )
        return 1
    producer = ROSTER.producer(USER_EVENTS).name
    readers = [spec.name for spec in ROSTER.subscribers(USER_EVENTS)]
    baseline = {name: applied(clients[name]) for name in readers}

    users: list[dict[str, Any]] = []
    started = time.monotonic()
    for n in range(args.users):
        name = NAMES[n % len(NAMES)]
        email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
        response = clients[producer].post("/users", json={"name": name, "email": email})
        response.raise_for_status()
        users.append(response.json())
    print(f"created {len(users)} users through POST {ROSTER.url(producer)}/users")

    views: dict[tuple[str, str], str] = {}  # (service, user id) -> what it shows
    counted: dict[str, int] = {}
    deadline = time.monotonic() + args.timeout
    while True:
        counted = {name: applied(clients[name]) - baseline[name] for name in readers}
        for name in readers:
            if counted[name] < len(users):
                continue
            for user in users:
                if (name, user["id"]) in views:
                    continue
                if (shown := view(clients[name], name, user["id"])) is not None:
                    views[name, user["id"]] = shown
        if len(views) == len(readers) * len(users):
            break
        if time.monotonic() > deadline:
            missing = {
                name: f"applied {counted[name]} of {len(users)}; "
                f"shows {sum((name, u['id']) in views for u in users)}"
                for name in readers
                if any((name, u["id"]) not in views for u in users)
            }
            print(f"fan-out incomplete after {args.timeout:.0f}s: {missing}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    elapsed = time.monotonic() - started

    print(f"\nevery read model shows every user ({elapsed:.2f}s from first POST)\n")
    header = f"{'user':<18} {'email':<30} " + " ".join(f"{name:<22}" for name in readers)
    header = header.rstrip()
    print(header)
    print("-" * len(header))
    for user in users:
        shown = " ".join(f"{views[name, user['id']]:<22}" for name in readers)
        print(f"{user['name']:<18} {user['email']:<30} {shown}".rstrip())
    print(
        f"\n{CREATED} applied since the demo began: "
        + ", ".join(f"{name} {counted[name]}" for name in readers)
    )
    return 0
