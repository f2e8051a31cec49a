"""The contract every transport keeps, run against each adapter this project has.

memory always; the project's broker (Kafka-protocol broker or RabbitMQ) for real.
"""

import asyncio
import time
from collections.abc import Callable, Sequence

from eventkit.testing import async_wait_until
from eventkit.transports import Delivery, Outgoing, Transport

TransportFactory = Callable[[str], Transport]

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


async def test_every_subscriber_gets_every_message_in_key_order(
    transport_factory: tuple[TransportFactory, str],
) -> None:
    make, stream = transport_factory
    received: dict[str, list[bytes]] = {"a": [], "b": []}
    headers_seen: list[dict[str, str]] = []
    consumers: list[Transport] = []
    for name in received:
        consumer = make(name)

        async def handler(batch: Sequence[Delivery], name: str = name) -> None:
            for body, headers in batch:
                received[name].append(body)
                headers_seen.append(dict(headers))

        consumer.subscribe(stream, handler, description="test stream")
        consumers.append(consumer)
    producer = make("producer")
    producer.declare_publisher(stream)
    started = list(dict.fromkeys([*consumers, producer]))  # memory: one shared instance
    for transport in started:
        await transport.start()
    assert await producer.ping()
    messages = [f"m{n}".encode() for n in range(50)]
    try:
        for body in messages[:25]:
            await producer.publish(stream, body, key="one-aggregate", event_type="T", headers=TRACE)
        # The relay's way: many in flight, the key's order kept, each confirmed.
        batch = [
            Outgoing(stream=stream, body=body, key="one-aggregate", event_type="T", headers=TRACE)
            for body in messages[25:]
        ]
        assert await producer.publish_batch(batch, timeout=10) == [None] * 25
        await async_wait_until(
            lambda: asyncio.sleep(0, all(len(got) >= 50 for got in received.values())),
            timeout=30,
            what="both subscribers to receive 50 messages",
        )
        assert received == {"a": messages, "b": messages}
        assert all(h["traceparent"] == TRACE["traceparent"] for h in headers_seen)
    finally:
        for transport in started:
            await transport.stop()


async def test_the_dead_letter_destination_is_named_for_the_service(
    transport_factory: tuple[TransportFactory, str],
) -> None:
    make, _ = transport_factory
    transport = make("svc")
    assert transport.config.dead_letters.startswith("dlq.")
    assert transport.config.max_retries >= 0


async def test_a_retry_comes_back_to_its_streams_handler_after_the_delay(
    transport_factory: tuple[TransportFactory, str],
) -> None:
    make, stream = transport_factory
    consumer = make("retrier")
    consumer.config.retry_delays_seconds = (1.0,)  # type: ignore[misc]
    consumer.config.max_retries = 1  # type: ignore[misc]
    back: list[tuple[bytes, dict[str, str], float]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        back.extend((body, dict(headers), time.monotonic()) for body, headers in batch)

    consumer.subscribe(stream, handler)
    consumer.declare_publisher(stream)
    await consumer.start()
    try:
        sent_at = time.monotonic()
        await consumer.publish_retry(
            stream, b"again", {"x-attempts": "1", **TRACE}, key="k1", delay=1.0
        )
        await async_wait_until(
            lambda: asyncio.sleep(0, bool(back)), timeout=30, what="the retry to come back"
        )
        [(body, headers, came_back_at)] = back
        assert body == b"again" and headers["x-attempts"] == "1"
        assert headers["traceparent"] == TRACE["traceparent"]
        assert came_back_at - sent_at >= 0.9  # it waited in the broker
    finally:
        await consumer.stop()
