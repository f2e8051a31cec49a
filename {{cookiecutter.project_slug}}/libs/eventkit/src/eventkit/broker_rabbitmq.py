"""RabbitMQ transport on FastStream (aio-pika).

Each stream is a durable topic exchange; each consuming service has a durable queue
`<service>.<stream>` bound with `#`, so it sees every event of the stream. Messages
are persistent and published with confirms; a message is acked after its handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.rabbit import (
    Channel,
    ExchangeType,
    RabbitBroker,
    RabbitExchange,
    RabbitMessage,
    RabbitQueue,
)
from faststream.specification import AsyncAPI

from eventkit.envelope import Envelope
from eventkit.events import STREAMS, describe
from eventkit.transport import RawHandler

BROKER_KIND = "rabbitmq"
DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672/"


@dataclass
class RabbitMQConfig:
    url: str
    queue_prefix: str
    # Each unacknowledged delivery is handled as its own task, so with more than one in
    # flight one user's events can be applied out of order. 1 keeps them in order; raise
    # it only for streams whose order does not matter.
    prefetch_count: int = 1


def config_from_settings(settings: Any) -> RabbitMQConfig:
    return RabbitMQConfig(url=settings.BROKER_URL, queue_prefix=settings.SERVICE_NAME)


def stream_exchange(stream: str) -> RabbitExchange:
    return RabbitExchange(stream, type=ExchangeType.TOPIC, durable=True)


# Dead letters: one direct exchange, and per service a durable queue `dlq.<service>`
# bound with the service's name. Service queues dead-letter into it too.
DLQ_EXCHANGE = RabbitExchange("dlq", type=ExchangeType.DIRECT, durable=True)


def dead_letter_queue(service: str) -> RabbitQueue:
    return RabbitQueue(f"dlq.{service}", durable=True, routing_key=service)


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    return message.body


class BrokerTransport:
    def __init__(self, config: RabbitMQConfig) -> None:
        self.config = config
        self.broker = RabbitBroker(
            config.url,
            logger=None,
            default_channel=Channel(prefetch_count=config.prefetch_count, publisher_confirms=True),
        )

    def subscribe(self, stream: str, handler: RawHandler) -> None:
        queue = RabbitQueue(
            f"{self.config.queue_prefix}.{stream}",
            durable=True,
            routing_key="#",
            arguments={
                "x-dead-letter-exchange": DLQ_EXCHANGE.name,
                "x-dead-letter-routing-key": self.config.queue_prefix,
            },
        )
        subscriber = self.broker.subscriber(
            queue,
            stream_exchange(stream),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_body,
            title=f"{self.config.queue_prefix}:{stream}",
            description=describe(stream),
        )

        async def on_message(body: bytes, message: RabbitMessage) -> None:
            headers = {k: str(v) for k, v in (message.headers or {}).items()}
            await handler(body, headers)

        subscriber(on_message)

    def declare_publisher(self, stream: str) -> None:
        self.broker.publisher(
            exchange=stream_exchange(stream),
            routing_key="#",
            title=f"{stream}:publish",
            description=describe(stream),
            schema=Envelope,
        )

    async def start(self) -> None:
        await self.broker.start()
        # Declare every stream's exchange up front so publishing never races a consumer.
        for stream in STREAMS:
            await self.broker.declare_exchange(stream_exchange(stream))
        exchange = await self.broker.declare_exchange(DLQ_EXCHANGE)
        queue = await self.broker.declare_queue(dead_letter_queue(self.config.queue_prefix))
        await queue.bind(exchange, routing_key=self.config.queue_prefix)

    async def recover(self) -> None:
        """Nothing to do: the robust connection re-declares exchanges, queues and bindings."""

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
            exchange=stream_exchange(stream),
            routing_key=event_type,
            persist=True,
            mandatory=False,
            content_type="application/json",
            message_type=event_type,
            headers={"aggregate-id": key, **(headers or {})},
        )

    async def publish_dead_letter(self, service: str, body: bytes, headers: dict[str, str]) -> None:
        await self.broker.publish(
            body,
            exchange=DLQ_EXCHANGE,
            routing_key=service,
            persist=True,
            mandatory=False,
            headers=dict(headers),
        )

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)

    def asyncapi(self, title: str) -> dict[str, Any]:
        return AsyncAPI(self.broker, title=title).to_specification().to_jsonable()
