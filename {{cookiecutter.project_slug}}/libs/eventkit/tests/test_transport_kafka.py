"""What only the Kafka transport does, against a real Kafka-protocol broker (tansu).

The fan-out every transport keeps is in test_transport_contract.py.
"""

import asyncio
import uuid
from collections.abc import Mapping

from faststream.kafka import KafkaMessage

from eventkit.testing import async_wait_until
from eventkit.transports.kafka import KafkaConfig, KafkaTransport


def transport(url: str, group: str) -> KafkaTransport:
    return KafkaTransport(KafkaConfig(brokers=[url], group_id=group, session_timeout_ms=2000))


async def test_asyncapi_names_the_subscribed_topic(kafka_url: str) -> None:
    consumer = transport(kafka_url, "docs")

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        return None

    consumer.subscribe("things", handler)
    document = consumer.asyncapi("test")
    assert document["asyncapi"].startswith("3.")
    assert any("things" in name for name in document["channels"])


async def test_dead_letters_land_on_the_configured_topic_with_their_key(kafka_url: str) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    received: list[tuple[bytes, bytes | None, dict[str, str]]] = []
    reader = transport(kafka_url, f"reader-{service}")
    subscriber = reader.broker.subscriber(
        f"dlq.{service}", group_id=f"reader-{service}", auto_offset_reset="earliest"
    )

    @subscriber
    async def on_dead_letter(body: bytes, message: KafkaMessage) -> None:
        key = message.raw_message.key  # type: ignore[union-attr]
        received.append((message.body, key, dict(message.headers)))

    producer = transport(kafka_url, service)
    assert producer.config.dead_letters == f"dlq.{service}"
    await producer.start()
    await producer.publish_dead_letter(
        b"poison", {"x-error": "boom", "x-attempts": "4"}, key="agg-1"
    )
    await reader.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, received), timeout=30, what="the dead letter on dlq.<service>"
        )
        [(body, key, headers)] = received
        assert (body, key) == (b"poison", b"agg-1")
        assert (headers["x-error"], headers["x-attempts"]) == ("boom", "4")
    finally:
        await producer.stop()
        await reader.stop()


def test_a_dead_letter_topic_of_ones_own_is_honoured() -> None:
    config = KafkaConfig(brokers=["x:9092"], group_id="g", dead_letter_topic="parked.g")
    assert config.dead_letters == "parked.g"
