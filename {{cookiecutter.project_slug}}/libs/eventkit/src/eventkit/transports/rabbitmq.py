"""RabbitMQ transport on FastStream (aio-pika).

Each stream is a durable topic exchange; each consuming service has a durable queue
`<service>.<stream>` bound with `#` (or with the event types its handlers name), so it
sees the events of the stream it handles. Messages are persistent and published with
confirms; a message is acked after its handler.

A service queue has a single active consumer: one replica of the service takes its
deliveries, the others stand by, and the next takes over when it goes (what it had not
acked goes back to the queue in order). Replicas competing for a queue would each take a
share of it, and an aggregate's events could overtake each other between them (a slow
replica holding an aggregate's first event while another applies its second); so a queue
keeps its order as far as the consumer, as a Kafka partition does for its one consumer
in a group. A service's throughput per stream is then one replica's.

Queues are quorum queues by default (QUEUE_TYPE): replicated over a cluster's nodes, so
one node's loss loses none of them. A delivery handed back too often (DELIVERY_LIMIT: a
message that crashes its consumer each time) goes to the service's dead-letter queue.
Their own dead-lettering (a retry's delay running out, the delivery limit) is
at-least-once. QUEUE_TYPE=classic gives single-node classic queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiormq.exceptions import ChannelPreconditionFailed
from faststream import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitMessage,
    RabbitQueue,
    TestRabbitBroker,
)
from faststream.specification import AsyncAPI
from pydantic import Field
from pydantic_settings import BaseSettings

from eventkit.envelope import Envelope
from eventkit.roster import dead_letter_stream, retry_stream, stream_subscription
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
    publish_per_key,
)

# Dead letters: one direct exchange; per service a durable queue `dlq.<service>` bound
# with the service's name. Service queues dead-letter into it too.
DLQ_EXCHANGE = RabbitExchange("dlq", type=ExchangeType.DIRECT, durable=True)
# Retries: per service and delay a durable queue `retry.<service>.<ms>ms` whose messages
# expire after the delay into this headers exchange, which routes each back to the queue
# its `retry-queue` header names (headers starting with x- are not matched).
RETRY_EXCHANGE = RabbitExchange("retry", type=ExchangeType.HEADERS, durable=True)
RETRY_QUEUE_HEADER = "retry-queue"
# How long a batch waits for a delivery tag missing before it goes on without it.
GAP_WAIT_SECONDS = 0.25


# Where RabbitMQ answers on a developer's machine (local-up's) when BROKER_URL is unset.
LOCAL_URL = "amqp://guest:guest@localhost:5672/"


class RabbitMQSettings(BaseSettings):
    """RabbitMQ's settings, read where ServiceSettings reads its own (the environment, .env)."""

    model_config = SETTINGS_SOURCES

    DEAD_LETTER_MAX_LENGTH: int = Field(
        100_000,
        description="RabbitMQ: the most dead letters a dlq.<service> queue keeps.",
    )
    QUEUE_TYPE: Literal["quorum", "classic"] = Field(
        "quorum",
        description="RabbitMQ: the type of every queue a service declares: quorum "
        "(replicated over a cluster's nodes) or classic; the same for every service.",
    )
    DELIVERY_LIMIT: int = Field(
        20,
        ge=1,
        description="RabbitMQ, quorum queues: deliveries of a message handed back "
        "unapplied (its consumer crashed on it) before it goes to the dead-letter queue.",
    )
    PREFETCH_COUNT: int = Field(
        400,
        description="RabbitMQ: unacknowledged deliveries per consumer; above "
        "CONSUMER_BATCH_SIZE so the next batch arrives while one is applied.",
    )


BROKER_SETTINGS = RabbitMQSettings  # this adapter's settings, under the name every adapter uses


@dataclass
class RabbitMQConfig(DeliveryConfig):
    """`RabbitMQConfig(url=..., service=..., prefetch_count=20)`."""

    url: str
    # The service: it names the queues (`<service>.<stream>`) and its dead letters.
    service: str
    # Unacknowledged deliveries per consumer: above batch_size, so the next batch fills
    # while one is applied (each aggregate's events still apply in sequence order).
    prefetch_count: int = default("PREFETCH_COUNT", RabbitMQSettings)
    # The most dead letters the queue keeps; past it the oldest are dropped.
    dead_letter_max_length: int = default("DEAD_LETTER_MAX_LENGTH", RabbitMQSettings)
    queue_type: Literal["quorum", "classic"] = default("QUEUE_TYPE", RabbitMQSettings)
    # Deliveries of a message handed back unapplied, after which a quorum queue
    # dead-letters it.
    delivery_limit: int = default("DELIVERY_LIMIT", RabbitMQSettings)
    # A batch may wait in the consumer (for a rebuild, for the database) far longer than on
    # Kafka: each time it is handed back counts towards the delivery limit. Below the
    # broker's consumer_timeout (30 min by default).
    batch_hold_seconds: float = field(default=600.0, kw_only=True)

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_topic or dead_letter_stream(self.service)


def config_from_settings(
    settings: ServiceSettings, rabbitmq: RabbitMQSettings | None = None
) -> RabbitMQConfig:
    """`rabbitmq`: unset, read from the environment."""
    rabbitmq = rabbitmq or RabbitMQSettings()
    return RabbitMQConfig(
        url=settings.broker_url,
        service=settings.SERVICE_NAME,
        prefetch_count=rabbitmq.PREFETCH_COUNT,
        dead_letter_max_length=rabbitmq.DEAD_LETTER_MAX_LENGTH,
        queue_type=rabbitmq.QUEUE_TYPE,
        delivery_limit=rabbitmq.DELIVERY_LIMIT,
        **delivery_from_settings(settings),
    )


def from_settings(settings: ServiceSettings) -> RabbitMQTransport:
    return RabbitMQTransport(config_from_settings(settings))


def stream_exchange(stream: str) -> RabbitExchange:
    return RabbitExchange(stream, type=ExchangeType.TOPIC, durable=True)


def consumer_queue(
    config: RabbitMQConfig, service: str, stream: str, routing_key: str = "#"
) -> RabbitQueue:
    """`<service>.<stream>`: durable, with a single active consumer (the module's
    docstring says why), dead-lettering into the service's dead letters.

    The publisher declares its readers' queues too, with its own config: QUEUE_TYPE and
    DELIVERY_LIMIT must be the same for every service (the broker refuses a queue declared
    again with other arguments).
    """
    arguments: dict[str, Any] = {
        "x-single-active-consumer": True,
        "x-dead-letter-exchange": DLQ_EXCHANGE.name,
        "x-dead-letter-routing-key": service,
    }
    if config.queue_type == "quorum":
        arguments |= {"x-delivery-limit": config.delivery_limit, **AT_LEAST_ONCE}
    return _queue(config, stream_subscription(service, stream), arguments, routing_key)


# A quorum queue's own dead-lettering, at least once (it needs reject-publish overflow).
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def _queue(
    config: RabbitMQConfig, name: str, arguments: dict[str, Any], routing_key: str = ""
) -> RabbitQueue:
    given: Any = arguments  # FastStream types them per queue type; they are checked above
    if config.queue_type == "quorum":
        return RabbitQueue(
            name, queue_type=QueueType.QUORUM, routing_key=routing_key, arguments=given
        )
    return RabbitQueue(name, durable=True, routing_key=routing_key, arguments=given)


class QueueDeclaredOtherwise(Exception):
    """A queue exists with other arguments than this service declares (another QUEUE_TYPE
    or DELIVERY_LIMIT, or a version before quorum queues or before single active
    consumers): the broker refuses it."""


class Batcher:
    """Gathers the deliveries of one queue into batches for one handler, in queue order.

    RabbitMQ hands over each delivery on its own (aio-pika runs each in a task, up to the
    prefetch), and tasks can reach this point out of order. Each queue has a channel of
    its own, so its delivery tags count 1, 2, 3...: a batch is cut in tag order, and waits
    a moment for a missing tag still on its way. Each delivery waits here until its batch
    is applied, and is acked (or, if the batch failed, nacked and redelivered) as it
    returns.
    """

    def __init__(self, handler: BatchHandler, size: int, wait_seconds: float) -> None:
        self.handler = handler
        self.size = size
        self.wait_seconds = wait_seconds
        self._pending: list[tuple[int, Delivery, asyncio.Future[None]]] = []
        self._next_tag: int | None = None
        self._arrived = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, tag: int, delivery: Delivery) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((tag, delivery, done))
        self._arrived.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch = await self._next_batch()
            try:
                await self.handler([delivery for _, delivery, _ in batch])
            except Exception as exc:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _next_batch(self) -> list[tuple[int, Delivery, asyncio.Future[None]]]:
        """Up to `size` deliveries in tag order, once full, or after a short window."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        waited_for_gap = False
        while True:
            self._arrived.clear()
            self._pending.sort(key=lambda item: item[0])
            first = self._pending[0][0]
            gap = self._next_tag is not None and first > self._next_tag
            remaining = deadline - loop.time()
            if (len(self._pending) >= self.size and not gap) or remaining <= 0:
                if not gap or waited_for_gap:
                    break
                # The missing tag's delivery is most likely a task that has not run yet
                # (a busy machine): worth a wait longer than the batch window, once.
                waited_for_gap = True
                deadline = loop.time() + GAP_WAIT_SECONDS
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        batch = [self._pending[0]]
        for item in self._pending[1 : self.size]:  # the run of consecutive tags
            if item[0] != batch[-1][0] + 1:
                break
            batch.append(item)
        self._pending = self._pending[len(batch) :]
        # A lower tag than expected: the channel was opened again and counts from 1.
        self._next_tag = batch[-1][0] + 1
        return batch


class RabbitMQTransport:
    def __init__(self, config: RabbitMQConfig) -> None:
        self.config = config
        # No dependency injection: see `message_as_received`.
        self.broker = RabbitBroker(
            config.url, logger=None, default_channel=self._channel(), apply_types=False
        )
        self._streams: list[str] = []
        # (queue, stream, routing key): the keys a queue takes beyond its first
        self._bindings: list[tuple[RabbitQueue, str, str]] = []
        self._unbind_all: list[tuple[RabbitQueue, str]] = []
        # (stream, service): the queues of the roster's readers of what this one publishes
        self._readers: list[tuple[str, str]] = []
        # this service's queues, which take their retries back from the retry exchange
        self._retry_bindings: list[RabbitQueue] = []
        self._declares = True

    def _channel(self) -> Channel:
        # A publish no queue takes comes back as an error (mandatory), so the relay keeps
        # the row instead of marking a lost event sent. Every channel is set so, since an
        # exchange publishes on the channel that first declared it.
        return Channel(
            prefetch_count=self.config.prefetch_count,
            publisher_confirms=True,
            on_return_raises=True,
        )

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None:
        self._streams.append(stream)
        # Bound with each event type the handlers take (routing key = type), else with `#`.
        keys = sorted(types) if types else ["#"]
        queue = consumer_queue(self.config, self.config.service, stream, routing_key=keys[0])
        self._bindings += [(queue, stream, key) for key in keys[1:]]
        if types:  # a publisher may have bound `#` for it before it first started
            self._unbind_all.append((queue, stream))
        subscriber = self.broker.subscriber(
            queue,
            stream_exchange(stream),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=message_as_received,
            # A channel of its own: its delivery tags count this queue's deliveries only.
            channel=self._channel(),
            title=f"{self.config.service}:{stream}",
            description=description,
        )

        self._retry_bindings.append(queue)
        batcher = Batcher(handler, self.config.batch_size, self.config.batch_wait_ms / 1000)

        async def on_message(message: RabbitMessage) -> None:
            headers = {k: str(v) for k, v in (message.headers or {}).items()}
            await batcher.submit(message.raw_message.delivery_tag or 0, (message.body, headers))

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
        try:
            await self.broker.start()
            if self._declares:
                await self._declare()
        except ChannelPreconditionFailed as exc:
            await self.broker.stop()
            raise QueueDeclaredOtherwise(
                f"{exc}. This service declares {self.config.queue_type} queues "
                f"(QUEUE_TYPE; DELIVERY_LIMIT={self.config.delivery_limit}), each service "
                "queue with a single active consumer; give every "
                "service the same, or move the queue's messages and delete it so it is "
                "declared anew (README: Batches, retries and dead letters)"
            ) from exc

    @contextlib.asynccontextmanager
    async def under_test(self) -> AsyncIterator[None]:
        """FastStream's TestRabbitBroker in place of the connection, for unit tests: what is
        published goes through the real subscribers and handlers, with no broker process."""
        self._declares = False
        try:
            async with TestRabbitBroker(self.broker, connect_only=True):
                yield
        finally:
            self._declares = True

    async def _declare(self) -> None:
        """The exchanges, queues and bindings this service publishes to and reads from."""
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
            declared = await self.broker.declare_queue(consumer_queue(self.config, service, stream))
            if declared.declaration_result.consumer_count == 0:
                await declared.bind(stream, routing_key="#")
        if self._retry_bindings:
            await self._declare_retries()
        exchange = await self.broker.declare_exchange(DLQ_EXCHANGE)
        dead_letters = await self.broker.declare_queue(
            _queue(
                self.config,
                self.config.dead_letters,
                {"x-max-length": self.config.dead_letter_max_length, "x-overflow": "drop-head"},
                routing_key=self.config.service,
            )
        )
        await dead_letters.bind(exchange, routing_key=self.config.service)

    async def _declare_retries(self) -> None:
        """The delay queues of this service, and its queues' bindings for what comes back."""
        retries = await self.broker.declare_exchange(RETRY_EXCHANGE)
        for delay in self.config.retry_tiers:
            arguments: dict[str, Any] = {
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": RETRY_EXCHANGE.name,
            }
            if self.config.queue_type == "quorum":
                arguments |= AT_LEAST_ONCE  # an expiring retry must reach its queue
            await self.broker.declare_queue(
                _queue(self.config, retry_stream(self.config.service, delay), arguments)
            )
        for queue in self._retry_bindings:
            declared = await self.broker.declare_queue(queue)
            await declared.bind(
                retries, arguments={"x-match": "all", RETRY_QUEUE_HEADER: queue.name}
            )

    async def recover(self) -> None:
        """Nothing to do: the robust connection re-declares exchanges, queues and bindings."""

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish(self, message: Outgoing) -> None:
        await self.broker.publish(
            message.body,
            exchange=stream_exchange(message.stream),
            routing_key=message.event_type,
            persist=True,
            mandatory=True,
            content_type="application/json",
            message_type=message.event_type,
            headers={"aggregate-id": message.key, **(message.headers or {})},
        )

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        """Many publishes in flight on the confirm channel, their confirms awaited together.

        A message no queue takes comes back (mandatory) as its failure, so it stays pending.
        """
        return await publish_per_key(self.publish, messages, timeout)

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None:
        await self.broker.publish(
            body,
            queue=retry_stream(self.config.service, delay),
            persist=True,
            mandatory=True,
            headers={
                **headers,
                "aggregate-id": key,
                RETRY_QUEUE_HEADER: stream_subscription(self.config.service, stream),
            },
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
        document: dict[str, Any] = (
            AsyncAPI(self.broker, title=title).to_specification().to_jsonable()
        )
        return document
