"""Admin calls on a running service, for people at a terminal.

    python -m dev_tools admin dlq billing        list billing's dead letters
    python -m dev_tools admin replay billing     hand them all back to billing (alone)
    python -m dev_tools admin rebuild analytics  rebuild its read model from the event feeds
    python -m dev_tools admin poison billing     publish a malformed message to a stream billing
                                               reads, to see a dead letter made

SERVICE is any service of the roster that subscribes to something (it is they that keep
dead letters and read models). It is found at <SERVICE>_URL (default: localhost and its
roster port); the token is ADMIN_TOKEN from the environment or from .env, as the services
read it. `poison` goes through the broker at BROKER_URL, as the services reach it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import httpx

from contracts import ROSTER
from eventkit import ServiceSettings
from eventkit.settings import admin_token
from eventkit.transports import Outgoing, create_transport

CONSUMERS = [spec.name for spec in ROSTER.consumers]
PAGE = 1000  # dead letters one replay call hands back at most (its `limit` allows no more)
CALLS = {
    "dlq": ("GET", "/dlq"),
    "replay": ("POST", "/dlq/replay"),
    "rebuild": ("POST", "/admin/rebuild"),
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in [*CALLS, "poison"] or argv[1] not in CONSUMERS:
        usage = f"usage: admin.py {'|'.join(CALLS)}|poison {'|'.join(CONSUMERS)}"
        print(usage, file=sys.stderr)
        return 2
    call, service = argv
    if call == "poison":
        return poison(service)
    method, path = CALLS[call]
    base = ROSTER.url(service)
    token = admin_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        if call == "replay":
            return replay_all(base + path, headers)
        response = httpx.request(method, base + path, headers=headers, timeout=300)
    except httpx.TransportError as exc:
        print(f"{service} at {base} does not answer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1


def poison(service: str) -> int:
    """Publish a message that is not JSON to the first stream `service` reads, typed as the
    stream's first event type so that every subscriber's queue takes it. The contract's way
    with it: each subscriber of the stream dead-letters it at once, saying why."""
    stream = ROSTER.service(service).subscribes[0]
    event_type = ROSTER.events.of_stream(stream)[0].name
    marker = uuid.uuid4().hex
    body = f"poison {marker}: not JSON, published by make poison".encode()
    name = f"poison-{marker[:6]}"
    settings = ServiceSettings(SERVICE_NAME=name, PORT=0, DATABASE_URL="sqlite://")

    async def send() -> None:
        transport = create_transport(settings)
        await transport.start()
        try:
            await transport.publish(
                Outgoing(stream=stream, body=body, key=marker, event_type=event_type)
            )
        finally:
            await transport.stop()

    asyncio.run(send())
    readers = ", ".join(spec.name for spec in ROSTER.subscribers(stream))
    print(f"published poison {marker} to {stream}; {readers} dead-letter it at once")
    return 0


def replay_all(url: str, headers: dict[str, str]) -> int:
    """POST /dlq/replay a page at a time, to the end of the list as it stood at the start
    (one that fails again comes back after that end, and waits for the next replay)."""
    replayed, params = 0, {"limit": PAGE}
    while True:
        response = httpx.post(url, params=params, headers=headers, timeout=300)
        page = response.json()
        if not response.is_success:
            print(json.dumps(page, indent=2))
            return 1
        replayed += page["replayed"]
        if page["next"] is None:
            print(json.dumps({"replayed": replayed}, indent=2))
            return 0
        params = {"after": page["next"], "through": page["through"], "limit": PAGE}
