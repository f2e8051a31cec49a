"""What only the RabbitMQ transport does, against a real RabbitMQ (BROKER_URL or local).

The fan-out every transport keeps is in test_transport_contract.py.
"""

import asyncio
import os
import uuid
from collections.abc import Mapping

import aio_pika
import pytest

from eventkit.roster import dead_letter_stream, service_queue
from eventkit.settings import LOCAL_BROKER_URLS, ServiceSettings
from eventkit.testing import async_wait_until
from eventkit.transports.rabbitmq import RabbitMQConfig, RabbitMQTransport, config_from_settings

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


def test_every_setting_reaches_its_config_field() -> None:
    settings = ServiceSettings(
        SERVICE_NAME="svc",
        PORT=0,
        BROKER_URL="amqp://u:p@h:5672/v",
        PREFETCH_COUNT=50,
        DEAD_LETTER_TOPIC="parked",
        MAX_RETRIES=7,
        RETRY_BACKOFF_SECONDS=0.5,
        RETRY_BACKOFF_MAX_SECONDS=9.0,
    )
    assert config_from_settings(settings) == RabbitMQConfig(
        url="amqp://u:p@h:5672/v",
        service="svc",
        prefetch_count=50,
        dead_letter_topic="parked",
        max_retries=7,
        retry_backoff_seconds=0.5,
        retry_backoff_max_seconds=9.0,
    )
    defaults = config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0))
    assert (defaults.prefetch_count, defaults.dead_letters) == (1, "dlq.svc")


async def test_prefetch_and_the_dead_letter_queue_come_from_the_config(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"svc-{stream}"
    parked = f"parked-{service}"
    rabbitmq_names += [stream, service_queue(service, stream), parked]
    config = RabbitMQConfig(
        url=RABBITMQ_URL, service=service, prefetch_count=7, dead_letter_topic=parked
    )
    rabbit = RabbitMQTransport(config)
    started, release = [], asyncio.Event()

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        started.append(body)
        await release.wait()

    rabbit.subscribe(stream, handler)
    rabbit.declare_publisher(stream)
    await rabbit.start()
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        for n in range(20):
            await rabbit.publish(stream, f"m{n}".encode(), key="k", event_type="T")
        channel = await connection.channel()

        async def held_back() -> bool:
            queue = await channel.declare_queue(service_queue(service, stream), passive=True)
            return len(started) == 7 and queue.declaration_result.message_count == 13

        # 7 unacknowledged deliveries at once, the other 13 wait in the queue.
        await async_wait_until(held_back, timeout=10, what="7 deliveries in flight, 13 waiting")
        release.set()
        await rabbit.publish_dead_letter(b"poison", {"x-error": "boom"})
        queue = await channel.declare_queue(parked, passive=True)
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"poison"
        await message.ack()
    finally:
        release.set()
        await rabbit.stop()
        await connection.close()


async def test_a_queue_whose_handlers_name_types_is_bound_to_those_only(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"svc-{stream}"
    rabbitmq_names += [stream, service_queue(service, stream), dead_letter_stream(service)]
    rabbit = transport(service)
    received: list[bytes] = []

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        received.append(body)

    rabbit.subscribe(stream, handler, types={"Wanted", "AlsoWanted"})
    rabbit.declare_publisher(stream)
    await rabbit.start()
    try:
        for event_type in ("Wanted", "Unwanted", "AlsoWanted", "Unwanted"):
            if event_type == "Unwanted":  # no queue takes it: the broker hands it back
                with pytest.raises(Exception, match=r"NO_ROUTE"):
                    await rabbit.publish(stream, b"no", key="k", event_type=event_type)
            else:
                await rabbit.publish(stream, event_type.encode(), key="k", event_type=event_type)
        await async_wait_until(
            lambda: asyncio.sleep(0, len(received) >= 2), timeout=10, what="the wanted two"
        )
    finally:
        await rabbit.stop()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(service_queue(service, stream), passive=True)
        assert queue.declaration_result.message_count == 0  # the unwanted were never routed here
    assert sorted(received) == [b"AlsoWanted", b"Wanted"]


async def test_a_publish_no_queue_takes_fails_so_the_outbox_keeps_it(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"svc-{stream}"
    rabbitmq_names += [stream, dead_letter_stream(service)]
    publisher = transport(service)
    publisher.declare_publisher(stream)  # no readers in its roster
    await publisher.start()
    try:
        with pytest.raises(Exception, match=r"NO_ROUTE"):
            await publisher.publish(stream, b"lost?", key="k", event_type="T")
    finally:
        await publisher.stop()


async def test_readers_that_start_after_the_publisher_get_what_it_sent_before(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    publisher_name, reader_name = f"pub-{stream}", f"reader-{stream}"
    rabbitmq_names += [
        stream,
        dead_letter_stream(publisher_name),
        dead_letter_stream(reader_name),
        service_queue(reader_name, stream),
    ]
    publisher = transport(publisher_name)
    publisher.declare_publisher(stream, subscribers=[reader_name])
    await publisher.start()
    try:
        for n in range(3):
            await publisher.publish(stream, f"early{n}".encode(), key="k", event_type="T")
    finally:
        await publisher.stop()
    reader, received = transport(reader_name), []

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        received.append(body)

    reader.subscribe(stream, handler)
    await reader.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, len(received) >= 3), timeout=10, what="the early three"
        )
    finally:
        await reader.stop()
    assert received == [b"early0", b"early1", b"early2"]
