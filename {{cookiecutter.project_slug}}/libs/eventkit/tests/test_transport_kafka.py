"""What only the Kafka transport does, against a real Kafka-protocol broker (tansu).

The fan-out every transport keeps is in test_transport_contract.py.
"""

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import CreateTopicsResponse_v3
from faststream.kafka import KafkaMessage
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, Subscriptions, create_service
from eventkit.db import Database
from eventkit.inbox import ProcessedEvent
from eventkit.roster import retry_stream, retry_subscription, stream_subscription
from eventkit.settings import ServiceSettings
from eventkit.testing import async_wait_until
from eventkit.transports import Delivery, message_as_received
from eventkit.transports.kafka import (
    KafkaConfig,
    KafkaTransport,
    TopicsNotCreated,
    config_from_settings,
)
from sample_domain import THINGS, attach_recorder, happened, things_roster


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
        f"dlq.{service}",
        group_id=f"reader-{service}",
        auto_offset_reset="earliest",
        decoder=message_as_received,
    )

    @subscriber
    async def on_dead_letter(message: KafkaMessage) -> None:
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
    "KAFKA_FETCH_MAX_WAIT_MS": 400,
}


def test_every_setting_reaches_its_config_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the environment, as a service reads them: ServiceSettings' and KafkaSettings'."""
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, str(value))
    config = config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0))
    assert config == KafkaConfig(
        brokers=["a:9092", "b:9092"],
        group_id="team-group",
        auto_offset_reset="latest",
        acks="1",
        enable_idempotence=True,
        fetch_max_wait_ms=400,
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
    for name in SETTINGS:
        monkeypatch.delenv(name)
    defaults = config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0))
    assert (defaults.group_id, defaults.acks, defaults.dead_letters) == ("svc", "all", "dlq.svc")


def by_group(kafka: KafkaTransport) -> dict[str, Any]:
    """The transport's FastStream subscribers, by consumer group."""
    subscribers: list[Any] = list(kafka.broker.subscribers)
    return {subscriber.group_id: subscriber for subscriber in subscribers}


async def test_the_config_drives_the_consumer_the_producer_and_the_topics(kafka_url: str) -> None:
    name = f"cfg{uuid.uuid4().hex[:6]}"
    config = KafkaConfig(
        brokers=[kafka_url], group_id=f"group-{name}", auto_offset_reset="latest", partitions=2
    )
    kafka = KafkaTransport(config)

    async def handler(batch: Sequence[Delivery]) -> None:
        return None

    kafka.subscribe(name, handler)
    # The stream's subscriber in a group of its own (one group's members on different topics
    # rebalanced without end when a replica joined, on tansu), and one subscriber of every
    # retry topic in another: all of that group's members read the same topics.
    subscribers = by_group(kafka)
    retries = retry_subscription(f"group-{name}")
    assert sorted(subscribers) == sorted([stream_subscription(f"group-{name}", name), retries])
    topics = [retry_stream(f"group-{name}", delay) for delay in config.retry_tiers]
    assert subscribers[retries].topic_names == topics
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


async def test_a_short_retry_does_not_wait_behind_a_long_one(kafka_url: str) -> None:
    """One consumer reads every delay's topic: a partition whose first retry is not due is
    paused (and its position committed there), not waited on, so a 0.5 s retry published
    after a 6 s one comes back first, and the 6 s one still comes back, once due, even
    after a restart while it waited."""
    name = f"tiers{uuid.uuid4().hex[:6]}"
    back: list[tuple[bytes, float]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        back.extend((body, time.time()) for body, _ in batch)

    def retrier() -> KafkaTransport:
        config = KafkaConfig(
            brokers=[kafka_url],
            group_id=name,
            session_timeout_ms=2000,
            max_retries=2,
            retry_delays_seconds=(0.5, 6.0),
        )
        kafka = KafkaTransport(config)
        kafka.subscribe(name, handler)
        return kafka

    async def assigned(kafka: KafkaTransport) -> Any:
        """The retry consumer, once the group has handed it its partitions."""
        retries = by_group(kafka)[retry_subscription(name)]

        async def has_partitions() -> bool:
            return retries.consumer is not None and bool(retries.consumer.assignment())

        await async_wait_until(has_partitions, timeout=30, what="the retry partitions")
        return retries.consumer

    kafka = retrier()
    await kafka.start()
    try:
        consumer = await assigned(kafka)
        sent = time.time()
        await kafka.publish_retry(name, b"long", {}, key="a", delay=6.0)
        await kafka.publish_retry(name, b"short", {}, key="b", delay=0.5)
        await async_wait_until(
            lambda: asyncio.sleep(0, [body for body, _ in back] == [b"short"]),
            timeout=5,
            what="the 0.5 s retry, ahead of the 6 s one",
        )
        # The 6 s retry's partition waits paused, its position on the retry.
        await async_wait_until(
            lambda: asyncio.sleep(0, bool(consumer.paused())), timeout=5, what="a pause"
        )
    finally:
        await kafka.stop()
    assert time.time() < sent + 6.0, "the short retry came back only after the long one was due"
    kafka = retrier()
    await kafka.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, len(back) == 2), timeout=30, what="the 6 s retry"
        )
    finally:
        await kafka.stop()
    [(body, at)] = back[1:]
    assert body == b"long" and at >= sent + 6.0


async def test_a_retry_waits_out_its_delay_under_faststreams_test_broker() -> None:
    """TestKafkaBroker has no consumer to pause: the retry subscriber sleeps until due."""
    kafka = KafkaTransport(
        KafkaConfig(
            brokers=["unused:9092"], group_id="probe", max_retries=1, retry_delays_seconds=(0.3,)
        )
    )
    back: list[bytes] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        back.extend(body for body, _ in batch)

    kafka.subscribe(THINGS, handler)
    async with kafka.under_test():
        await kafka.start()
        sent = time.monotonic()
        await kafka.publish_retry(THINGS, b"again", {}, key="k", delay=0.3)
        await async_wait_until(lambda: asyncio.sleep(0, back), timeout=5, what="the retry")
        await kafka.stop()
    assert back == [b"again"]
    assert time.monotonic() - sent >= 0.25


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


REFUSAL = "Replication factor: 3 larger than available brokers: 1."


def one_broker_cluster(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """CreateTopics as a one-broker Kafka answers it (tansu takes any replication factor):
    INVALID_REPLICATION_FACTOR for a topic asked with more than one replica, in the answer's
    error codes (aiokafka raises for none of them). Returns the topics asked for each call."""
    asked: list[list[str]] = []
    create = AIOKafkaAdminClient.create_topics

    async def create_topics(self: Any, new_topics: list[Any], *args: Any, **kwargs: Any) -> Any:
        asked.append([topic.name for topic in new_topics])
        fits = [topic for topic in new_topics if topic.replication_factor <= 1]
        errors = [(topic.name, 38, REFUSAL) for topic in new_topics if topic not in fits]
        if fits:
            errors += (await create(self, fits, *args, **kwargs)).topic_errors
        return CreateTopicsResponse_v3(throttle_time_ms=0, topic_errors=errors)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", create_topics)
    return asked


def replicated(url: str, group: str) -> KafkaTransport:
    config = KafkaConfig(brokers=[url], group_id=group, session_timeout_ms=2000, replication=3)
    return KafkaTransport(config)


async def test_a_topic_the_broker_refuses_fails_start_with_the_reason(
    kafka_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_broker_cluster(monkeypatch)
    kafka = replicated(kafka_url, f"refused-{uuid.uuid4().hex[:6]}")
    kafka.declare_publisher(f"stream-{uuid.uuid4().hex[:6]}")
    with pytest.raises(TopicsNotCreated) as refused:
        await kafka.start()
    assert "InvalidReplicationFactorError" in str(refused.value)
    assert REFUSAL in str(refused.value)
    await kafka.stop()


async def test_a_topic_another_service_created_first_is_fine(kafka_url: str) -> None:
    stream = f"stream-{uuid.uuid4().hex[:6]}"
    first, second = (transport(kafka_url, f"{n}-{stream}") for n in ("first", "second"))
    for kafka in (first, second):
        kafka.declare_publisher(stream)
    await first.start()
    # As if the second had looked before the first created it: TOPIC_ALREADY_EXISTS.
    second._topics = [stream]
    admin = AIOKafkaAdminClient(bootstrap_servers=[kafka_url])
    await admin.start()
    try:
        answer = await admin.create_topics([NewTopic(stream, 3, 1)])
        assert [code for _, code, _ in answer.topic_errors] == [36]
    finally:
        await admin.close()
    await second.ensure_topics()  # someone was quicker: that is all it wanted
    await first.stop()


async def test_a_consumer_is_not_ready_while_its_topics_cannot_be_created(
    kafka_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else the subscriber would create them itself with the cluster's defaults (one
    replica here) and the service would look healthy on topics it did not ask for."""
    asked = one_broker_cluster(monkeypatch)
    subscriptions = Subscriptions()

    @subscriptions.on_message(THINGS)
    async def on_thing(event: Envelope, session: AsyncSession) -> None:
        return None

    settings = ServiceSettings(SERVICE_NAME="probe", PORT=0, DATABASE_URL=database_url)
    kafka = replicated(kafka_url, f"probe-{uuid.uuid4().hex[:6]}")
    app = create_service(
        settings, things_roster("probe"), subscriptions=subscriptions, transport=kafka
    )
    answers: list[tuple[int, str]] = []
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        async with client:

            async def tried_thrice() -> bool:
                ready = await client.get("/ready")
                answers.append((ready.status_code, ready.json()["broker"]))
                # The service's own asks (a subscriber asks for its topic alone).
                return sum(kafka.config.dead_letters in topics for topics in asked) >= 3

            # It keeps trying (the cluster may yet grow), and is never ready meanwhile.
            await async_wait_until(tried_thrice, timeout=30, interval=0.2, what="three tries")
    assert set(answers) == {(503, "down")}
