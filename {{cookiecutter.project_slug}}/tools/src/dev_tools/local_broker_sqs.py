"""The local SNS + SQS: the endpoint at BROKER_URL, or a moto_server of our own if none answers.

moto (installed by requirements.lock) keeps topics and queues in memory only, so a restart
starts from none; the services declare their topology again when they start. It answers
on LOCAL_URL, LocalStack's port, so a LocalStack of the user's own is used the same way.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from eventkit.transports.sqs import LOCAL_URL

DEFAULT_URL = LOCAL_URL

# What a service added later gets of earlier events (make service says it).
PAST_SEEN = (
    "its queue is created and subscribed at its first start, so it gets what is "
    "published from then on (SNS keeps nothing for a queue that does not exist yet)"
)
# How fault tests take this endpoint down: moto keeps everything in memory, so stopping it
# would lose every queue (AWS never does); freezing it (SIGSTOP) is the same outage.
OUTAGE = "freeze"


def programs(var: Path) -> list[tuple[str, str, dict[str, str]]]:
    url = urlsplit(os.environ.get("BROKER_URL") or DEFAULT_URL)
    if url.scheme not in ("http", "https"):
        sys.exit(f"local-up: BROKER_URL={url.geturl()} is not an http endpoint of SNS and SQS")
    host = url.hostname or "localhost"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=2).close()
        return []  # an endpoint already answers (LocalStack, compose's moto): use it
    except OSError:
        pass
    server = Path(sys.executable).with_name("moto_server")
    if host not in ("localhost", "127.0.0.1") or not server.exists():
        sys.exit(
            f"local-up: no SNS/SQS endpoint answers at {host}:{port} and none can be started "
            "here; start one or set BROKER_URL"
        )
    return [("broker", f"{server} -H 127.0.0.1 -p {port}", {})]
