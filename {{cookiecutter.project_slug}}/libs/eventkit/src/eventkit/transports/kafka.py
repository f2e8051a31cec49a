"""Kafka transport on FastStream (aiokafka).

One topic per stream, one consumer group per service, events keyed by aggregate id
so one aggregate's events stay in order on one partition. Offsets are committed
after the handler returns, so a crash redelivers instead of losing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.message import StreamMessage
from faststream.specification import AsyncAPI

from eventkit.envelope import Envelope
from eventkit.roster import dead_letter_stream
from eventkit.settings import ServiceSettings, default
from eventkit.transports import DeliveryConfig, RawHandler, delivery_from_settings


@dataclass
class KafkaConfig(DeliveryConfig):
    """`KafkaConfig(brokers=[...], group_id=..., dead_letter_topic=..., max_retries=3)`."""

    brokers: list[str]
    group_id: str
    auto_offset_reset: Literal["earliest", "latest"] = default("AUTO_OFFSET_RESET")
    acks: Literal["0", "1", "all"] = default("KAFKA_ACKS")
    enable_idempotence: bool = default("KAFKA_IDEMPOTENCE")
    # Low waits keep fan-out latency low; the broker does not cut the wait short.
    fetch_max_wait_ms: int = 20
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    # Partitions of each stream's topic: the most consumers of one group that can share it.
    partitions: int = default("STREAM_PARTITIONS")
    replication: int = default("STREAM_REPLICATION")
    # How soon clients notice a topic that was re-created or got partitions.
    metadata_max_age_ms: int = 5000
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_topic or dead_letter_stream(self.group_id)


def config_from_settings(settings: ServiceSettings) -> KafkaConfig:
    return KafkaConfig(
        brokers=[b.strip() for b in settings.broker_url.split(",") if b.strip()],
        group_id=settings.GROUP_ID or settings.SERVICE_NAME,
        auto_offset_reset=settings.AUTO_OFFSET_RESET,
        acks=settings.KAFKA_ACKS,
        enable_idempotence=settings.KAFKA_IDEMPOTENCE,
        partitions=settings.STREAM_PARTITIONS,
        replication=settings.STREAM_REPLICATION,
        **delivery_from_settings(settings),
    )


def from_settings(settings: ServiceSettings) -> KafkaTransport:
    return KafkaTransport(config_from_settings(settings))


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    return message.body


class KafkaTransport:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.broker = KafkaBroker(
            config.brokers,
            logger=None,
            metadata_max_age_ms=config.metadata_max_age_ms,
            acks=int(config.acks) if config.acks != "all" else "all",
            enable_idempotence=config.enable_idempotence,
            **config.extra,
        )
        self._topics: list[str] = [config.dead_letters]

    def subscribe(
        self,
        stream: str,
        handler: RawHandler,
        *,
        types: Collection[str] | None = None,
        description: str = "",
    ) -> None:
        # Kafka has no routing by type: the handler filters (eventkit's consumer does).
        self._topics.append(stream)
        subscriber = self.broker.subscriber(
            stream,
            group_id=self.config.group_id,
            auto_offset_reset=self.config.auto_offset_reset,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_body,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            title=f"{self.config.group_id}:{stream}",
            description=description,
        )

        async def on_message(body: bytes, message: KafkaMessage) -> None:
            await handler(body, message.headers)

        subscriber(on_message)

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        self._topics.append(stream)
        self.broker.publisher(
            stream, title=f"{stream}:publish", description=description, schema=Envelope
        )

    async def start(self) -> None:
        await self.ensure_topics()
        await self.broker.start()

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
                new = [
                    NewTopic(t, self.config.partitions, self.config.replication) for t in missing
                ]
                with contextlib.suppress(TopicAlreadyExistsError):  # another was quicker
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(
        self,
        stream: str,
        body: bytes,
        *,
        key: str,
        event_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        await self.broker.publish(
            body,
            topic=stream,
            key=key.encode() if key else None,
            headers={
                "content-type": "application/json",
                "event-type": event_type,
                **(headers or {}),
            },
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
        return AsyncAPI(self.broker, title=title).to_specification().to_jsonable()
