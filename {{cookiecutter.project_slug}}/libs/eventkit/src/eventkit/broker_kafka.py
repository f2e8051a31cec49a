"""Kafka transport on FastStream (aiokafka).

One topic per stream, one consumer group per service, events keyed by aggregate id
so one aggregate's events stay in order on one partition. Offsets are committed
after the handler returns, so a crash redelivers instead of losing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.message import StreamMessage
from faststream.specification import AsyncAPI

from eventkit.envelope import Envelope
from eventkit.events import STREAMS, describe
from eventkit.transport import RawHandler

BROKER_KIND = "kafka"
DEFAULT_BROKER_URL = "localhost:9092"


@dataclass
class KafkaConfig:
    brokers: list[str]
    group_id: str
    dead_letter_topic: str | None = None
    max_retries: int = 3
    # Low waits keep fan-out latency low; the broker does not cut the wait short.
    fetch_max_wait_ms: int = 20
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    # Partitions of each stream's topic: the most consumers of one group that can share it.
    partitions: int = 3
    # How soon clients notice a topic that was re-created or got partitions.
    metadata_max_age_ms: int = 5000
    extra: dict[str, Any] = field(default_factory=dict)


def config_from_settings(settings: Any) -> KafkaConfig:
    return KafkaConfig(
        brokers=[b.strip() for b in settings.BROKER_URL.split(",") if b.strip()],
        group_id=settings.SERVICE_NAME,
        dead_letter_topic=f"dlq.{settings.SERVICE_NAME}",
        max_retries=settings.MAX_RETRIES,
        partitions=settings.STREAM_PARTITIONS,
    )


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    return message.body


class BrokerTransport:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.broker = KafkaBroker(
            config.brokers,
            logger=None,
            metadata_max_age_ms=config.metadata_max_age_ms,
            **config.extra,
        )

    def subscribe(self, stream: str, handler: RawHandler) -> None:
        subscriber = self.broker.subscriber(
            stream,
            group_id=self.config.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_body,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            title=f"{self.config.group_id}:{stream}",
            description=describe(stream),
        )

        async def on_message(body: bytes, message: KafkaMessage) -> None:
            await handler(body, message.headers)

        subscriber(on_message)

    def declare_publisher(self, stream: str) -> None:
        self.broker.publisher(
            stream, title=f"{stream}:publish", description=describe(stream), schema=Envelope
        )

    async def start(self) -> None:
        await self.ensure_topics()
        await self.broker.start()

    async def recover(self) -> None:
        """After an outage: a broker that lost its topics gets them back with our partitions."""
        await self.ensure_topics()

    async def ensure_topics(self) -> None:
        """Create each stream's topic with our partition count (and this service's dlq topic)."""
        topics = [*STREAMS]
        if self.config.dead_letter_topic:
            topics.append(self.config.dead_letter_topic)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.brokers, request_timeout_ms=5000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                new = [NewTopic(t, self.config.partitions, 1) for t in missing]
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
            key=key.encode(),
            headers={
                "content-type": "application/json",
                "event-type": event_type,
                **(headers or {}),
            },
        )

    async def publish_dead_letter(self, service: str, body: bytes, headers: dict[str, str]) -> None:
        await self.broker.publish(body, topic=f"dlq.{service}", headers=headers)

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)

    def asyncapi(self, title: str) -> dict[str, Any]:
        return AsyncAPI(self.broker, title=title).to_specification().to_jsonable()
