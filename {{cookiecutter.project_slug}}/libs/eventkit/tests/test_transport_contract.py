"""The contract every transport keeps, run against each adapter this project has.

memory always; the project's broker (Kafka-protocol broker or RabbitMQ) for real.
"""

import asyncio
from collections.abc import Callable, Mapping

from eventkit.testing import async_wait_until
from eventkit.transports import Transport

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

        async def handler(body: bytes, headers: Mapping[str, str], name: str = name) -> None:
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
        for body in messages:
            await producer.publish(stream, body, key="one-aggregate", event_type="T", headers=TRACE)
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
