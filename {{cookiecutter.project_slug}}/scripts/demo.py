"""A short scenario against the running stack: sign up a few users, watch them fan out.

    python scripts/demo.py [--users 5] [--timeout 30]

Creates users through the user service, waits until billing, notification and analytics
all show every one of them, then prints what each read model holds. Exits 1, naming the
read model and the users it is missing, if the fan-out does not finish in time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Any

import httpx

SERVICES = {"user": 8001, "notification": 8002, "analytics": 8003, "billing": 8004}
NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]


def url(name: str) -> str:
    return os.environ.get(f"{name.upper()}_URL", f"http://localhost:{SERVICES[name]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    http = {name: httpx.Client(base_url=url(name), timeout=10) for name in SERVICES}

    baseline = http["analytics"].get("/stats").json()["users_created"]
    users: list[dict[str, Any]] = []
    started = time.monotonic()
    for n in range(args.users):
        name = NAMES[n % len(NAMES)]
        email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
        response = http["user"].post("/users", json={"name": name, "email": email})
        response.raise_for_status()
        users.append(response.json())
    print(f"created {len(users)} users through POST {url('user')}/users")

    accounts: dict[str, dict[str, Any]] = {}
    welcomes: dict[str, dict[str, Any]] = {}
    stats: dict[str, Any] = {}
    deadline = time.monotonic() + args.timeout
    while True:
        for user in users:
            if user["id"] not in accounts:
                response = http["billing"].get(f"/accounts/{user['id']}")
                if response.status_code == 200:
                    accounts[user["id"]] = response.json()
            if user["id"] not in welcomes:
                sent = (
                    http["notification"]
                    .get("/notifications", params={"user_id": user["id"]})
                    .json()
                )
                if sent:
                    welcomes[user["id"]] = sent[0]
        stats = http["analytics"].get("/stats").json()
        counted = stats["users_created"] - baseline
        if len(accounts) == len(welcomes) == len(users) and counted >= len(users):
            break
        if time.monotonic() > deadline:
            missing = {
                "billing": [u["id"] for u in users if u["id"] not in accounts],
                "notification": [u["id"] for u in users if u["id"] not in welcomes],
                "analytics": f"counted {counted} of {len(users)}",
            }
            print(f"fan-out incomplete after {args.timeout:.0f}s: {missing}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    elapsed = time.monotonic() - started

    print(f"\nevery read model shows every user ({elapsed:.2f}s from first POST)\n")
    header = f"{'user':<18} {'email':<30} {'billing account':<22} {'notification':<14}"
    print(header)
    print("-" * len(header))
    for user in users:
        account, welcome = accounts[user["id"]], welcomes[user["id"]]
        billing = f"{account['status']}, {account['invoices']} invoices"
        print(f"{user['name']:<18} {user['email']:<30} {billing:<22} {welcome['kind']:<14}")
    print(
        f"\nanalytics /stats: users_created={stats['users_created']} "
        f"users_active={stats['users_active']} events_by_type={stats['events_by_type']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
