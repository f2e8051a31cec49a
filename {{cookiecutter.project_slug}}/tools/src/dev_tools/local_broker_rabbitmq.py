"""The local RabbitMQ: the server at BROKER_URL, or a node of our own if none answers there.

The own node runs from the installed `rabbitmq-server` with its data under var/rabbitmq,
on the port that BROKER_URL names.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from eventkit.transports.rabbitmq import LOCAL_URL

DEFAULT_URL = LOCAL_URL

# What a service added later gets of earlier events (make service says it).
PAST_SEEN = (
    "its queue exists from its first start (or a publisher's next start), so it gets "
    "what is published from then on"
)
# How fault tests take this broker down: the node keeps its data under var/, so a real
# stop and start. (A frozen node keeps its TCP connections open, which clients cannot tell
# from a quiet one until heartbeats time out.)
OUTAGE = "stop"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def programs(var: Path) -> list[tuple[str, str, dict[str, str]]]:
    url = urlsplit(os.environ.get("BROKER_URL") or DEFAULT_URL)
    host, port = url.hostname or "localhost", url.port or 5672
    try:
        socket.create_connection((host, port), timeout=2).close()
        return []  # a RabbitMQ already answers; use it
    except OSError:
        pass
    # Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user, who cannot write
    # under var/; the script it wraps runs the node as the caller.
    server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not Path(server).exists():
        server = shutil.which("rabbitmq-server") or server
    if host not in ("localhost", "127.0.0.1") or not Path(server).exists():
        sys.exit(
            f"local-up: no RabbitMQ answers at {host}:{port} and none can be started here; "
            "start one or set BROKER_URL"
        )
    home = var / "rabbitmq"
    (home / "log").mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "RABBITMQ_NODENAME": f"local{port}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(_free_port()),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
    }
    return [("broker", server, env)]
