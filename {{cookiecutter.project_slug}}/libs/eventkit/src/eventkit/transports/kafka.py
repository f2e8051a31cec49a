"""Kafka transport on FastStream (aiokafka).

One topic per stream, each read in a consumer group of the service's own, events keyed by
aggregate id so one aggregate's events stay in order on one partition. Offsets are
committed after the handler returns, so a crash redelivers instead of losing.

Retries wait in one topic per delay (`retry_stream`), all read by one consumer of the
service's (group `retry_subscription`): a partition of a retry topic holds its messages in
the order they fall due, so the consumer hands on what is due and pauses each partition at
its first message that is not, until it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker
from faststream.specification import AsyncAPI
from pydantic import Field
from pydantic_settings import BaseSettings

from eventkit.envelope import Envelope
from eventkit.roster import (
    dead_letter_stream,
    retry_stream,
    retry_subscription,
    stream_subscription,
)
from eventkit.settings import SETTINGS_SOURCES, ServiceSettings, default
from eventkit.transports import (
    BatchHandler,
    Delivery,
    DeliveryConfig,
    EventTypes,
    Outcome,
    Outgoing,
    delivery_from_settings,
    message_as_received,
)

# Where Kafka answers on a developer's machine (local-up's broker) when BROKER_URL is unset.
LOCAL_URL = "localhost:9092"


class KafkaSettings(BaseSettings):
    """Kafka's settings, read where ServiceSettings reads its own (the environment, .env)."""

    model_config = SETTINGS_SOURCES

    STREAM_PARTITIONS: int = Field(
        3,
        description="Kafka: partitions of a topic this service creates.",
    )
    STREAM_REPLICATION: int = Field(
        1,
        description="Kafka: replicas of a topic this service creates.",
    )
    STREAM_MIN_INSYNC_REPLICAS: int = Field(
        1,
        description="Kafka: replicas that must hold an event before a publish with acks=all "
        "counts (min.insync.replicas of the topics this service creates).",
    )
    GROUP_ID: str | None = Field(
        None,
        description="Kafka: what the service's consumer groups are named after "
        "(`<GROUP_ID>.<stream>`, one per stream, and `<GROUP_ID>.retries`); unset: the "
        "service's name.",
    )
    AUTO_OFFSET_RESET: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Kafka: where a new consumer group starts reading.",
    )
    KAFKA_ACKS: Literal["0", "1", "all"] = Field(
        "all",
        description="Kafka: replicas that must have an event before a publish counts.",
    )
    KAFKA_IDEMPOTENCE: bool = Field(
        False,
        description="Kafka: idempotent producer (real Kafka; the embedded broker refuses it).",
    )
    KAFKA_FETCH_MAX_WAIT_MS: int = Field(
        100,
        ge=1,
        description="Kafka: how long an idle consumer's fetch waits on the broker. Real Kafka "
        "answers as soon as an event arrives, so a longer wait spares idle CPU; the embedded "
        "broker (tansu) often holds the fetch to its end, so there a longer wait is added lag.",
    )


BROKER_SETTINGS = KafkaSettings  # this adapter's settings, under the name every adapter uses


@dataclass
class KafkaConfig(DeliveryConfig):
    """`KafkaConfig(brokers=[...], group_id=..., dead_letter_topic=..., max_retries=3)`."""

    brokers: list[str]
    group_id: str
    auto_offset_reset: Literal["earliest", "latest"] = default("AUTO_OFFSET_RESET", KafkaSettings)
    acks: Literal["0", "1", "all"] = default("KAFKA_ACKS", KafkaSettings)
    enable_idempotence: bool = default("KAFKA_IDEMPOTENCE", KafkaSettings)
    # How long an idle consumer's fetch waits on the broker. Kafka answers as soon as a
    # message arrives, tansu (local-up) often only when the wait ends (at 500 ms the fan-out
    # lag's median at 50 sign-ups/s went from 85 to 213 ms); each wait that ends empty costs
    # both sides CPU (20 ms made an idle stack busy; 500 ms halved an idle stack's CPU).
    fetch_max_wait_ms: int = default("KAFKA_FETCH_MAX_WAIT_MS", KafkaSettings)
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    # Partitions of each stream's topic: the most consumers of one group that can share it.
    partitions: int = default("STREAM_PARTITIONS", KafkaSettings)
    replication: int = default("STREAM_REPLICATION", KafkaSettings)
    min_insync_replicas: int = default("STREAM_MIN_INSYNC_REPLICAS", KafkaSettings)
    # How soon clients notice a topic that was re-created or got partitions.
    metadata_max_age_ms: int = 5000
    # A batch fetch returns at once with what has arrived, or waits this long for some.
    batch_timeout_ms: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_topic or dead_letter_stream(self.group_id)


def config_from_settings(
    settings: ServiceSettings, kafka: KafkaSettings | None = None
) -> KafkaConfig:
    """`kafka`: unset, read from the environment."""
    kafka = kafka or KafkaSettings()
    return KafkaConfig(
        brokers=[b.strip() for b in settings.broker_url.split(",") if b.strip()],
        group_id=kafka.GROUP_ID or settings.SERVICE_NAME,
        auto_offset_reset=kafka.AUTO_OFFSET_RESET,
        acks=kafka.KAFKA_ACKS,
        enable_idempotence=kafka.KAFKA_IDEMPOTENCE,
        fetch_max_wait_ms=kafka.KAFKA_FETCH_MAX_WAIT_MS,
        partitions=kafka.STREAM_PARTITIONS,
        replication=kafka.STREAM_REPLICATION,
        min_insync_replicas=kafka.STREAM_MIN_INSYNC_REPLICAS,
        **delivery_from_settings(settings),
    )


def from_settings(settings: ServiceSettings) -> KafkaTransport:
    return KafkaTransport(config_from_settings(settings))


def _deliveries(message: KafkaMessage) -> list[Delivery]:
    """(body, headers) of each record of a batch message, in order."""
    bodies = cast(list[bytes], message.body)  # a batch message's body: its records' bodies
    return list(zip(bodies, message.batch_headers, strict=True))


# A retried message carries when it is due and the stream it came from.
DUE_HEADER = "x-retry-due"
# How long the retry consumer waits on the broker for messages.
RETRY_POLL_MS = 500
STREAM_HEADER = "x-original-topic"


class KafkaTransport:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        # No dependency injection: see `message_as_received`.
        self.broker = KafkaBroker(
            config.brokers,
            logger=None,
            apply_types=False,
            metadata_max_age_ms=config.metadata_max_age_ms,
            acks=int(config.acks) if config.acks != "all" else "all",
            enable_idempotence=config.enable_idempotence,
            **config.extra,
        )
        self._topics: list[str] = [config.dead_letters]
        self._handlers: dict[str, BatchHandler] = {}
        self._creates_topics = True
        # When each paused retry partition resumes (its first message falls due).
        self._resumes: dict[TopicPartition, asyncio.TimerHandle] = {}

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None:
        # Kafka has no routing by type: the handler filters (eventkit's consumer does).
        self._handlers[stream] = handler
        # A group per stream: one group's members on different topics (two consumers of
        # one service) rebalanced without end when a replica joined (seen on tansu).
        group = stream_subscription(self.config.group_id, stream)
        self._batch_subscriber(stream, group_id=group, description=description)(
            self._on_batch(handler)
        )
        tiers = self.config.retry_tiers
        if len(self._handlers) == 1 and tiers:  # this service's retries, once
            # One consumer for every delay's topic, in a group of its own whose members all
            # read the same topics. It pauses a partition while its first message is not
            # due, and polls on meanwhile: no poll interval has to cover the longest delay.
            subscriber = self._batch_subscriber(
                *(retry_stream(self.config.group_id, delay) for delay in tiers),
                group_id=retry_subscription(self.config.group_id),
                title=f"{self.config.group_id}:retries",
                description=f"{self.config.group_id}'s events retried after "
                + ", ".join(f"{delay:g}" for delay in tiers)
                + " s",
                # A retry is seconds late anyway: poll lazily, and spare the CPU.
                fetch_max_wait_ms=RETRY_POLL_MS,
                batch_timeout_ms=RETRY_POLL_MS,
                include_in_schema=False,  # internal: not one of the service's channels
            )
            subscriber(self._on_retry_batch)

    def _batch_subscriber(
        self, *topics: str, group_id: str, description: str, title: str = "", **options: Any
    ) -> Any:
        """A batch subscriber of `topics` in consumer group `group_id`, committing after each
        batch."""
        self._topics.extend(topics)
        settings: dict[str, Any] = {
            "batch_timeout_ms": self.config.batch_timeout_ms,
            "fetch_max_wait_ms": self.config.fetch_max_wait_ms,
            **options,
        }
        return self.broker.subscriber(
            *topics,
            group_id=group_id,
            auto_offset_reset=self.config.auto_offset_reset,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            batch=True,
            max_records=self.config.batch_size,
            decoder=message_as_received,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            title=title or f"{self.config.group_id}:{','.join(topics)}",
            description=description,
            **settings,
        )

    @staticmethod
    def _on_batch(handler: BatchHandler) -> Any:
        async def on_batch(message: KafkaMessage) -> None:
            await handler(_deliveries(message))

        return on_batch

    async def _on_retry_batch(self, message: KafkaMessage) -> None:
        """Hand each message that is due to its stream's handler. A partition whose next
        message is not due yet goes back to that message and pauses until it is due; the
        commit after this returns commits that position (aiokafka's `commit()` commits
        every assigned partition's position, paused or not)."""
        batch = _deliveries(message)
        consumer = message.consumer
        if not isinstance(consumer, AIOKafkaConsumer):
            # FastStream's TestKafkaBroker: no partitions to pause; wait out the batch.
            due = max(_due(headers) for _, headers in batch)
            await asyncio.sleep(max(0.0, due - time.time()))
            await self._hand_back(batch)
            return
        records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message
        now = time.time()
        ready: list[Delivery] = []
        waiting: dict[TopicPartition, tuple[int, float]] = {}  # its first offset not due
        for record, delivery in zip(records, batch, strict=True):
            partition = TopicPartition(record.topic, record.partition)
            if partition in waiting:
                continue  # behind one not due: a partition's retries fall due in order
            due = _due(delivery[1])
            if due > now:
                waiting[partition] = (record.offset, due)
            else:
                ready.append(delivery)
        await self._hand_back(ready)
        assigned = consumer.assignment()
        for partition, (offset, due) in waiting.items():
            if partition not in assigned:
                continue  # revoked meanwhile: its new owner reads on from the last commit
            consumer.seek(partition, offset)
            consumer.pause(partition)
            self._resume_at(consumer, partition, due)

    async def _hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Each retried message to its stream's handler, one call per stream."""
        by_stream: dict[str, list[Delivery]] = {}
        for body, headers in deliveries:
            by_stream.setdefault(headers.get(STREAM_HEADER, ""), []).append((body, headers))
        for stream, batch in by_stream.items():
            await self._handlers[stream](batch)

    def _resume_at(self, consumer: AIOKafkaConsumer, partition: TopicPartition, due: float) -> None:
        """Resume `partition` at `due`, if it is still this consumer's then (a rebalance in
        between hands out partitions afresh, unpaused)."""

        def resume() -> None:
            del self._resumes[partition]
            if partition in consumer.assignment():
                consumer.resume(partition)

        if (earlier := self._resumes.pop(partition, None)) is not None:
            earlier.cancel()
        loop = asyncio.get_running_loop()
        self._resumes[partition] = loop.call_later(max(0.0, due - time.time()), resume)

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        self._topics.append(stream)
        self.broker.publisher(
            stream, title=f"{stream}:publish", description=description, schema=Envelope
        )

    async def start(self) -> None:
        if self._creates_topics:
            await self.ensure_topics()
        await self.broker.start()

    @contextlib.asynccontextmanager
    async def under_test(self) -> AsyncIterator[None]:
        """FastStream's TestKafkaBroker in place of the connection, for unit tests: what is
        published goes through the real subscribers and handlers, with no broker process."""
        self._creates_topics = False
        try:
            async with TestKafkaBroker(self.broker, connect_only=True):
                yield
        finally:
            self._creates_topics = True

    async def recover(self) -> None:
        """After an outage: a broker that lost its topics gets them back with our partitions."""
        await self.ensure_topics()

    async def ensure_topics(self) -> None:
        """Create the topics this service uses with our partition count, if missing."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.brokers, request_timeout_ms=5000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = sorted(set(self._topics) - existing)
            if missing:
                configs = {"min.insync.replicas": str(self.config.min_insync_replicas)}
                new = [
                    NewTopic(
                        t, self.config.partitions, self.config.replication, topic_configs=configs
                    )
                    for t in missing
                ]
                response = await admin.create_topics(new)
                # aiokafka raises for none of these: each topic has its own error code.
                refused = [
                    _refusal(topic, code, rest[0] if rest else None)
                    for topic, code, *rest in response.topic_errors
                    if code not in (0, TopicAlreadyExistsError.errno)  # another was quicker
                ]
                if refused:
                    raise TopicsNotCreated("the broker refused to create " + "; ".join(refused))
        finally:
            await admin.close()

    async def stop(self) -> None:
        for resume in self._resumes.values():
            resume.cancel()
        self._resumes.clear()
        await self.broker.stop()

    async def publish(self, message: Outgoing) -> None:
        await self.broker.publish(
            message.body,
            topic=message.stream,
            key=message.key.encode() if message.key else None,
            headers=_headers(message.event_type, message.headers),
        )

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        """Append each message to the producer in order, then await all the acks together.

        The producer sends one batch per partition at a time, so a key's messages (one
        partition) stay in the order appended. After a key's message fails to append, its
        later ones are not appended.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        outcomes: list[Outcome] = [TimeoutError(f"no ack within {timeout}s")] * len(messages)
        in_flight: dict[asyncio.Future[Any], int] = {}
        failed: dict[str, BaseException] = {}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):  # appending waits while the buffer is full
                for index, message in enumerate(messages):
                    if message.key in failed:
                        outcomes[index] = failed[message.key]
                        continue
                    try:
                        acked = await self.broker.publish(
                            message.body,
                            topic=message.stream,
                            key=message.key.encode() if message.key else None,
                            headers=_headers(message.event_type, message.headers),
                            no_confirm=True,
                        )
                    except Exception as exc:
                        outcomes[index] = exc
                        if message.key:
                            failed[message.key] = exc
                    else:
                        in_flight[acked] = index
        if in_flight:
            done, _ = await asyncio.wait(in_flight, timeout=max(0.0, deadline - loop.time()))
            for acked in done:
                if not acked.cancelled():
                    outcomes[in_flight[acked]] = acked.exception()
        return outcomes

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None:
        await self.broker.publish(
            body,
            topic=retry_stream(self.config.group_id, delay),
            key=key.encode() if key else None,
            headers={**headers, STREAM_HEADER: stream, DUE_HEADER: str(time.time() + delay)},
        )

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        await self.broker.publish(
            body,
            topic=self.config.dead_letters,
            key=key.encode() if key else None,
            headers=dict(headers),
        )

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)

    def asyncapi(self, title: str) -> dict[str, Any]:
        document: dict[str, Any] = (
            AsyncAPI(self.broker, title=title).to_specification().to_jsonable()
        )
        return document


class TopicsNotCreated(Exception):
    """The broker refused a topic this service needs (e.g. a replication factor above the
    cluster's size, or no permission): the service cannot start, nor be ready."""


def _refusal(topic: str, code: int, message: str | None) -> str:
    error = for_code(code)
    return f"{topic}: {error.__name__} ({message or error.description})"


def _due(headers: Mapping[str, str]) -> float:
    """When a retried message is due (epoch seconds); without a readable time, now."""
    try:
        return float(headers.get(DUE_HEADER, 0))
    except ValueError:
        return 0.0


def _headers(event_type: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """A published event's headers: its type, so consumers filter without decoding it."""
    return {"content-type": "application/json", "event-type": event_type, **(headers or {})}
