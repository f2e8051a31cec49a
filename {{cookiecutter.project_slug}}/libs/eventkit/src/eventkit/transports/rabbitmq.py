"""RabbitMQ transport on FastStream (aio-pika).

Each stream is a durable topic exchange; each consuming service has a durable queue
`<service>.<stream>` bound with `#` (or with the event types its handlers name), so it
sees the events of the stream it handles. Messages are persistent and published with
confirms; a message is acked after its handler.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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
from eventkit.roster import dead_letter_stream, service_queue
from eventkit.settings import ServiceSettings, default
from eventkit.transports import DeliveryConfig, RawHandler, delivery_from_settings

# Dead letters: one direct exchange; per service a durable queue `dlq.<service>` bound
# with the service's name. Service queues dead-letter into it too.
DLQ_EXCHANGE = RabbitExchange("dlq", type=ExchangeType.DIRECT, durable=True)


@dataclass
class RabbitMQConfig(DeliveryConfig):
    """`RabbitMQConfig(url=..., service=..., prefetch_count=20)`."""

    url: str
    # The service: it names the queues (`<service>.<stream>`) and its dead letters.
    service: str
    # Each unacknowledged delivery is handled as its own task, so with more than one in
    # flight one aggregate's events can be applied out of order. 1 keeps them in order.
    prefetch_count: int = default("PREFETCH_COUNT")
    # The most dead letters the queue keeps; past it the oldest are dropped.
    dead_letter_max_length: int = default("DEAD_LETTER_MAX_LENGTH")

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_topic or dead_letter_stream(self.service)


def config_from_settings(settings: ServiceSettings) -> RabbitMQConfig:
    return RabbitMQConfig(
        url=settings.broker_url,
        service=settings.SERVICE_NAME,
        prefetch_count=settings.PREFETCH_COUNT,
        dead_letter_max_length=settings.DEAD_LETTER_MAX_LENGTH,
        **delivery_from_settings(settings),
    )


def from_settings(settings: ServiceSettings) -> RabbitMQTransport:
    return RabbitMQTransport(config_from_settings(settings))


def stream_exchange(stream: str) -> RabbitExchange:
    return RabbitExchange(stream, type=ExchangeType.TOPIC, durable=True)


def consumer_queue(service: str, stream: str, routing_key: str = "#") -> RabbitQueue:
    """`<service>.<stream>`: durable, dead-lettering into the service's dead letters."""
    return RabbitQueue(
        service_queue(service, stream),
        durable=True,
        routing_key=routing_key,
        arguments={
            "x-dead-letter-exchange": DLQ_EXCHANGE.name,
            "x-dead-letter-routing-key": service,
        },
    )


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    return message.body


class RabbitMQTransport:
    def __init__(self, config: RabbitMQConfig) -> None:
        self.config = config
        self.broker = RabbitBroker(
            config.url,
            logger=None,
            # A publish no queue takes comes back as an error (mandatory), so the relay keeps
            # the row instead of marking a lost event sent.
            default_channel=Channel(
                prefetch_count=config.prefetch_count,
                publisher_confirms=True,
                on_return_raises=True,
            ),
        )
        self._streams: list[str] = []
        # (queue, stream, routing key): the keys a queue takes beyond its first
        self._bindings: list[tuple[RabbitQueue, str, str]] = []
        self._unbind_all: list[tuple[RabbitQueue, str]] = []
        # (stream, service): the queues of the roster's readers of what this one publishes
        self._readers: list[tuple[str, str]] = []

    def subscribe(
        self,
        stream: str,
        handler: RawHandler,
        *,
        types: Collection[str] | None = None,
        description: str = "",
    ) -> None:
        self._streams.append(stream)
        # Bound with each event type the handlers take (routing key = type), else with `#`.
        keys = sorted(types) if types else ["#"]
        queue = consumer_queue(self.config.service, stream, routing_key=keys[0])
        self._bindings += [(queue, stream, key) for key in keys[1:]]
        if types:  # a publisher may have bound `#` for it before it first started
            self._unbind_all.append((queue, stream))
        subscriber = self.broker.subscriber(
            queue,
            stream_exchange(stream),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_body,
            title=f"{self.config.service}:{stream}",
            description=description,
        )

        async def on_message(body: bytes, message: RabbitMessage) -> None:
            headers = {k: str(v) for k, v in (message.headers or {}).items()}
            await handler(body, headers)

        subscriber(on_message)

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        self._streams.append(stream)
        self._readers += [(stream, service) for service in subscribers]
        self.broker.publisher(
            exchange=stream_exchange(stream),
            routing_key="#",
            title=f"{stream}:publish",
            description=description,
            schema=Envelope,
        )

    async def start(self) -> None:
        await self.broker.start()
        # Declare the exchanges up front so publishing never races a consumer.
        for stream in self._streams:
            await self.broker.declare_exchange(stream_exchange(stream))
        for queue, stream, key in self._bindings:
            declared = await self.broker.declare_queue(queue)
            await declared.bind(stream, routing_key=key)
        for queue, stream in self._unbind_all:
            declared = await self.broker.declare_queue(queue)
            await declared.unbind(stream, routing_key="#")
        for stream, service in self._readers:
            # A reader not running yet gets its queue bound to everything now; once it runs
            # it binds what its handlers take (and drops `#` if they name types).
            declared = await self.broker.declare_queue(consumer_queue(service, stream))
            if declared.declaration_result.consumer_count == 0:
                await declared.bind(stream, routing_key="#")
        exchange = await self.broker.declare_exchange(DLQ_EXCHANGE)
        queue = await self.broker.declare_queue(
            RabbitQueue(
                self.config.dead_letters,
                durable=True,
                routing_key=self.config.service,
                arguments={
                    "x-max-length": self.config.dead_letter_max_length,
                    "x-overflow": "drop-head",
                },
            )
        )
        await queue.bind(exchange, routing_key=self.config.service)

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
            mandatory=True,
            content_type="application/json",
            message_type=event_type,
            headers={"aggregate-id": key, **(headers or {})},
        )

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        await self.broker.publish(
            body,
            exchange=DLQ_EXCHANGE,
            routing_key=self.config.service,
            persist=True,
            mandatory=False,
            headers={"aggregate-id": key, **headers},
        )

    async def ping(self) -> bool:
        return await self.broker.ping(timeout=2.0)

    def asyncapi(self, title: str) -> dict[str, Any]:
        return AsyncAPI(self.broker, title=title).to_specification().to_jsonable()
