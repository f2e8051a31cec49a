"""Admin calls on a running service, for people at a terminal.

    python scripts/admin.py dlq billing        list billing's dead letters
    python scripts/admin.py replay billing     republish them all to their streams
    python scripts/admin.py rebuild analytics  rebuild its read model from the event feeds

The service is found at <SERVICE>_URL (default localhost and its port); the token is
ADMIN_TOKEN from the environment or from .env, as the services read it.
"""

from __future__ import annotations

import json
import os
import sys

import httpx

from eventkit.settings import admin_token

PORTS = {"notification": 8002, "analytics": 8003, "billing": 8004}
CALLS = {
    "dlq": ("GET", "/dlq"),
    "replay": ("POST", "/dlq/replay"),
    "rebuild": ("POST", "/admin/rebuild"),
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CALLS or argv[1] not in PORTS:
        print(f"usage: admin.py {'|'.join(CALLS)} {'|'.join(PORTS)}", file=sys.stderr)
        return 2
    call, service = argv
    method, path = CALLS[call]
    base = os.environ.get(f"{service.upper()}_URL", f"http://localhost:{PORTS[service]}")
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
