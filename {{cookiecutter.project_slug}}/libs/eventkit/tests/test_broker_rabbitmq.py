"""The RabbitMQ transport against a real RabbitMQ (BROKER_URL, default the local one).

Each test uses its own exchange and queue names and deletes them afterwards.
"""

import asyncio
import os
import uuid
from collections.abc import Mapping

import aio_pika
import pytest

from eventkit.broker import DEFAULT_BROKER_URL, BrokerTransport, RabbitMQConfig
from eventkit.testing import async_wait_until

URL = os.environ.get("BROKER_URL", DEFAULT_BROKER_URL)


@pytest.fixture
async def stream() -> object:
    name = f"test.{uuid.uuid4().hex[:8]}"
    try:
        connection = await aio_pika.connect(URL, timeout=3)
    except Exception as exc:
        pytest.fail(f"RabbitMQ at {URL} does not answer ({exc!r}); start it or set BROKER_URL")
    yield name
    async with connection:
        channel = await connection.channel()
        for prefix in ("a", "b"):
            await channel.queue_delete(f"{prefix}-{name}.{name}")
        await channel.exchange_delete(name)


def transport(prefix: str) -> BrokerTransport:
    return BrokerTransport(RabbitMQConfig(url=URL, queue_prefix=prefix))


async def test_every_service_queue_gets_every_event_in_order(stream: str) -> None:
    received: dict[str, list[bytes]] = {"a": [], "b": []}
    seen_headers: list[dict[str, str]] = []
    trace_headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    consumers = []
    for prefix in received:
        consumer = transport(f"{prefix}-{stream}")

        async def handler(body: bytes, headers: Mapping[str, str], prefix: str = prefix) -> None:
            received[prefix].append(body)
            seen_headers.append(dict(headers))

        consumer.subscribe(stream, handler)
        await consumer.start()
        consumers.append(consumer)
    producer = transport("producer")
    await producer.start()
    assert await producer.ping()
    messages = [f"m{n}".encode() for n in range(50)]
    try:
        for body in messages:
            await producer.publish(
                stream, body, key="one-aggregate", event_type="Test", headers=trace_headers
            )
        await async_wait_until(
            lambda: asyncio.sleep(0, all(len(got) == 50 for got in received.values())),
            timeout=30,
            what="both queues to receive 50 messages",
        )
        assert received["a"] == messages
        assert received["b"] == messages
        # Trace context travels in the message headers.
        assert all(h["traceparent"] == trace_headers["traceparent"] for h in seen_headers)
    finally:
        for item in [producer, *consumers]:
            await item.stop()


async def test_queues_are_durable_and_bound_to_a_topic_exchange(stream: str) -> None:
    consumer = transport(f"a-{stream}")

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        return None

    consumer.subscribe(stream, handler)
    await consumer.start()
    await consumer.stop()
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        # passive declares fail unless the objects exist with these properties
        queue = await channel.declare_queue(f"a-{stream}.{stream}", passive=True)
        exchange = await channel.declare_exchange(stream, passive=True)
        await queue.bind(exchange, routing_key="#")


async def test_dead_letters_land_in_the_services_dlq_queue(stream: str) -> None:
    service = f"a-{stream}"
    producer = transport(service)
    await producer.start()
    try:
        await producer.publish_dead_letter(
            service, b"poison", {"x-error": "boom", "x-attempts": "4"}
        )
    finally:
        await producer.stop()
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"dlq.{service}", passive=True)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.body == b"poison"
        assert (message.headers["x-error"], message.headers["x-attempts"]) == ("boom", "4")
        await channel.queue_delete(f"dlq.{service}")
