"""Admin calls on a running service, for people at a terminal.

    python scripts/admin.py dlq billing        list billing's dead letters
    python scripts/admin.py replay billing     republish them all to their streams
    python scripts/admin.py rebuild analytics  rebuild its read model from the event feeds

SERVICE is any service of the roster that subscribes to something (it is they that keep
dead letters and read models). It is found at <SERVICE>_URL (default: localhost and its
roster port); the token is ADMIN_TOKEN from the environment or from .env, as the services
read it.
"""

from __future__ import annotations

import json
import sys

import httpx

from contracts import ROSTER
from eventkit.settings import admin_token

CONSUMERS = [spec.name for spec in ROSTER.consumers]
CALLS = {
    "dlq": ("GET", "/dlq"),
    "replay": ("POST", "/dlq/replay"),
    "rebuild": ("POST", "/admin/rebuild"),
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CALLS or argv[1] not in CONSUMERS:
        print(f"usage: admin.py {'|'.join(CALLS)} {'|'.join(CONSUMERS)}", file=sys.stderr)
        return 2
    call, service = argv
    method, path = CALLS[call]
    base = ROSTER.url(service)
    token = admin_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, base + path, headers=headers, timeout=300)
    except httpx.TransportError as exc:
        print(f"{service} at {base} does not answer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
