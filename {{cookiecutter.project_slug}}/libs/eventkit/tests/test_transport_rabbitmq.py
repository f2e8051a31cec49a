"""What only the RabbitMQ transport does, against a real RabbitMQ (BROKER_URL or local).

The fan-out every transport keeps is in test_transport_contract.py.
"""

import os
import uuid
from collections.abc import Mapping

import aio_pika

from eventkit.roster import dead_letter_stream, service_queue
from eventkit.settings import LOCAL_BROKER_URLS
from eventkit.transports.rabbitmq import RabbitMQConfig, RabbitMQTransport

RABBITMQ_URL = os.environ.get("BROKER_URL", LOCAL_BROKER_URLS["rabbitmq"])


def transport(service: str) -> RabbitMQTransport:
    return RabbitMQTransport(RabbitMQConfig(url=RABBITMQ_URL, service=service))


async def test_queues_are_durable_and_bound_to_a_topic_exchange(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"a-{stream}"
    rabbitmq_names += [stream, service_queue(service, stream), dead_letter_stream(service)]
    consumer = transport(service)

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        return None

    consumer.subscribe(stream, handler)
    await consumer.start()
    await consumer.stop()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        # passive declares fail unless the objects exist with these properties
        queue = await channel.declare_queue(service_queue(service, stream), passive=True)
        exchange = await channel.declare_exchange(stream, passive=True)
        await queue.bind(exchange, routing_key="#")


async def test_dead_letters_land_in_the_services_dlq_queue(rabbitmq_names: list[str]) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    rabbitmq_names.append(dead_letter_stream(service))
    producer = transport(service)
    await producer.start()
    try:
        await producer.publish_dead_letter(
            b"poison", {"x-error": "boom", "x-attempts": "4"}, key="agg-1"
        )
    finally:
        await producer.stop()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(dead_letter_stream(service), passive=True)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.body == b"poison"
        assert message.headers["aggregate-id"] == "agg-1"
        assert (message.headers["x-error"], message.headers["x-attempts"]) == ("boom", "4")
