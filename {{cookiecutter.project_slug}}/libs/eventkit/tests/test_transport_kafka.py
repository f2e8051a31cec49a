"""What only the Kafka transport does, against a real Kafka-protocol broker (tansu).

The fan-out every transport keeps is in test_transport_contract.py.
"""

import asyncio
import uuid
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaMessage
from sqlalchemy import func, select

from eventkit.db import Database
from eventkit.inbox import ProcessedEvent
from eventkit.roster import retry_stream
from eventkit.settings import ServiceSettings
from eventkit.testing import async_wait_until
from eventkit.transports import Delivery
from eventkit.transports.kafka import KafkaConfig, KafkaTransport, config_from_settings
from sample_domain import THINGS, attach_recorder, happened


def transport(url: str, group: str) -> KafkaTransport:
    return KafkaTransport(KafkaConfig(brokers=[url], group_id=group, session_timeout_ms=2000))


async def test_asyncapi_names_the_subscribed_topic(kafka_url: str) -> None:
    consumer = transport(kafka_url, "docs")

    async def handler(batch: Sequence[Delivery]) -> None:
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


SETTINGS = {
    "SERVICE_NAME": "svc",
    "PORT": 0,
    "BROKER_URL": "a:9092, b:9092",
    "GROUP_ID": "team-group",
    "AUTO_OFFSET_RESET": "latest",
    "KAFKA_ACKS": "1",
    "KAFKA_IDEMPOTENCE": True,
    "STREAM_PARTITIONS": 6,
    "STREAM_REPLICATION": 3,
    "DEAD_LETTER_TOPIC": "parked",
    "MAX_RETRIES": 7,
    "RETRY_DELAYS_SECONDS": "0.5, 9",
    "CONSUMER_BATCH_SIZE": 50,
    "CONSUMER_BATCH_WAIT_MS": 2,
    "STREAM_MIN_INSYNC_REPLICAS": 2,
}


def test_every_setting_reaches_its_config_field() -> None:
    config = config_from_settings(ServiceSettings(**SETTINGS))
    assert config == KafkaConfig(
        brokers=["a:9092", "b:9092"],
        group_id="team-group",
        auto_offset_reset="latest",
        acks="1",
        enable_idempotence=True,
        partitions=6,
        replication=3,
        min_insync_replicas=2,
        dead_letter_topic="parked",
        max_retries=7,
        retry_delays_seconds=(0.5, 9.0),
        batch_size=50,
        batch_wait_ms=2,
    )
    assert config.dead_letters == "parked"
    defaults = config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0))
    assert (defaults.group_id, defaults.acks, defaults.dead_letters) == ("svc", "all", "dlq.svc")


async def test_the_config_drives_the_consumer_the_producer_and_the_topics(kafka_url: str) -> None:
    name = f"cfg{uuid.uuid4().hex[:6]}"
    config = KafkaConfig(
        brokers=[kafka_url], group_id=f"group-{name}", auto_offset_reset="latest", partitions=2
    )
    kafka = KafkaTransport(config)

    async def handler(batch: Sequence[Delivery]) -> None:
        return None

    kafka.subscribe(name, handler)
    # The stream's subscriber in the service's group, then one per retry delay, each in a
    # group of its own named as its topic.
    topics = [retry_stream(f"group-{name}", delay) for delay in config.retry_tiers]
    groups = sorted(s.group_id for s in kafka.broker.subscribers)  # type: ignore[attr-defined]
    assert groups == sorted([f"group-{name}", *topics])
    await kafka.start()
    try:
        producer = kafka.broker.config.broker_config.producer._producer.producer  # type: ignore[attr-defined]
        assert producer._sender._acks == -1  # "all"
        admin = AIOKafkaAdminClient(bootstrap_servers=[kafka_url])
        await admin.start()
        try:
            [topic] = await admin.describe_topics([name])
        finally:
            await admin.close()
        assert len(topic["partitions"]) == 2
    finally:
        await kafka.stop()


async def test_a_batch_takes_the_real_subscriber_path_under_faststreams_test_broker(
    db: Database,
) -> None:
    """FastStream's TestKafkaBroker: our batch subscriber, decoder and consumer, no broker."""
    from faststream.kafka import TestKafkaBroker

    kafka = KafkaTransport(KafkaConfig(brokers=["unused:9092"], group_id="probe"))
    applied = attach_recorder(db, kafka)
    async with TestKafkaBroker(kafka.broker) as broker:
        for thing in ("a", "b"):
            await broker.publish(happened(thing).to_bytes(), topic=THINGS, key=thing.encode())
    assert applied == ["a", "b"]
    assert await db_count(db) == 2


async def db_count(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)
