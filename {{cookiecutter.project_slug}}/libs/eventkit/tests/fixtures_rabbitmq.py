"""The RabbitMQ adapter's test fixtures: names of a test's own on the shared RabbitMQ.

conftest.py takes them in when this project's broker is RabbitMQ (`FIXTURES`), and makes
the adapter's transports for the contract test with `transports`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator

import pytest

from eventkit.roster import dead_letter_stream, retry_stream, stream_subscription
from eventkit.transports import Transport
from eventkit.transports.rabbitmq import LOCAL_URL, RabbitMQConfig, RabbitMQTransport

RABBITMQ_URL = os.environ.get("BROKER_URL", LOCAL_URL)


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


def transports(
    request: pytest.FixtureRequest, stream: str
) -> Iterator[tuple[Callable[[str], Transport], str]]:
    """(make a RabbitMQ transport for service `name`, `stream`); its names are deleted
    after the test."""
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


FIXTURES = {"rabbitmq_names": rabbitmq_names}
