"""The contract every transport keeps, run against each adapter this project has.

memory always; the project's broker (Kafka-protocol broker, RabbitMQ or SNS + SQS) for real.
"""

import asyncio
import time
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, Subscriptions
from eventkit.consumer import Consumer
from eventkit.settings import shipped_broker
from eventkit.testing import async_wait_until
from eventkit.transports import Delivery, DeliveryConfig, Outgoing, Transport
from sample_domain import DatabaseDown, happened, things_registry

TransportFactory = Callable[[str], Transport]


def delivery_config(transport: Transport) -> DeliveryConfig:
    """The adapter's config, a DeliveryConfig in every adapter: the tests set its retry
    delays, which TransportConfig (what the Transport protocol promises) does not name."""
    config = transport.config
    assert isinstance(config, DeliveryConfig)
    return config


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
            await producer.publish(
                Outgoing(
                    stream=stream, body=body, key="one-aggregate", event_type="T", headers=TRACE
                )
            )
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
    config = delivery_config(consumer)
    config.retry_delays_seconds = (1.0,)
    config.max_retries = 1
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


# In one process every "service" shares the in-process transport; the brokers keep them apart.
BROKERS = [kind for kind in [shipped_broker()] if kind != "memory"]


@pytest.mark.parametrize("transport_factory", BROKERS, indirect=True)
async def test_a_retry_reaches_only_the_service_that_sent_it(
    transport_factory: tuple[TransportFactory, str],
) -> None:
    """What a dead-letter replay relies on: the stream's other subscribers do not get the
    event again (they have applied it, or dead-lettered it themselves)."""
    make, stream = transport_factory
    received: dict[str, list[bytes]] = {"mine": [], "other": []}
    services = {name: make(name) for name in received}
    for name, service in services.items():
        config = delivery_config(service)
        config.retry_delays_seconds = (0.5,)
        config.max_retries = 1

        async def handler(batch: Sequence[Delivery], name: str = name) -> None:
            received[name].extend(body for body, _ in batch)

        service.subscribe(stream, handler)
        service.declare_publisher(stream)
    for service in services.values():
        await service.start()
    try:
        await services["mine"].publish_retry(stream, b"again", {}, key="k", delay=0.5)
        await services["mine"].publish(
            Outgoing(stream=stream, body=b"for all", key="k", event_type="T")
        )
        await async_wait_until(
            lambda: asyncio.sleep(
                0, received["mine"] == [b"for all", b"again"] and received["other"]
            ),
            timeout=30,
            what="the retry back at its service, and the stream's event at both",
        )
        assert received["other"] == [b"for all"]
    finally:
        for service in services.values():
            await service.stop()


@pytest.mark.parametrize("transport_factory", BROKERS, indirect=True)
async def test_a_batch_handed_back_while_the_database_is_down_comes_again_and_applies_once(
    transport_factory: tuple[TransportFactory, str], database_url: str
) -> None:
    """A database outage longer than the retry schedule: the broker delivers the batch
    again and again (Kafka seeks back, RabbitMQ requeues), and nothing is retried or
    dead-lettered; once the database answers, each event applies once, in order."""
    make, stream = transport_factory
    db = DatabaseDown(database_url)
    await db.create_all()
    consumer_transport, producer = make("dbdown"), make("producer")
    config = delivery_config(consumer_transport)
    config.retry_delays_seconds = (0.2,)
    config.max_retries = 1
    config.batch_hold_seconds = 0.5
    if hasattr(config, "delivery_limit"):
        # RabbitMQ counts each hand-back towards a queue's delivery limit: in service a
        # batch waits 10 minutes before it goes back, here half a second.
        config.delivery_limit = 1000
    handed_back: list[str] = []

    async def retry(*args: object, **kwargs: object) -> None:
        handed_back.append("retry")

    async def dead_letter(*args: object, **kwargs: object) -> None:
        handed_back.append("dead letter")

    consumer_transport.publish_retry = retry  # type: ignore[method-assign]
    consumer_transport.publish_dead_letter = dead_letter  # type: ignore[method-assign]
    applied: list[int] = []
    subscriptions = Subscriptions()

    @subscriptions.on_message(stream)
    async def on_event(event: Envelope, session: AsyncSession) -> None:
        applied.append(event.sequence or 0)

    Consumer("dbdown", subscriptions, things_registry(), db, consumer_transport).attach()
    producer.declare_publisher(stream, subscribers=["dbdown"])
    for transport in (consumer_transport, producer):
        await transport.start()
    try:
        db.down = True
        for sequence in (1, 2, 3):
            event = happened("agg").model_copy(update={"sequence": sequence})
            await producer.publish(
                Outgoing(stream=stream, body=event.to_bytes(), key="agg", event_type=event.type)
            )
        # Many deliveries of ~0.5 s each, while the whole retry schedule is 0.2 s.
        await async_wait_until(
            lambda: asyncio.sleep(0, db.refused >= 20), timeout=60, what="deliveries waiting"
        )
        assert (applied, handed_back) == ([], [])
        db.down = False
        await async_wait_until(
            lambda: asyncio.sleep(0, applied == [1, 2, 3]), timeout=60, what="1, 2, 3 applied"
        )
        assert handed_back == []
    finally:
        for transport in (consumer_transport, producer):
            await transport.stop()
        await db.dispose()
