"""What only the RabbitMQ transport does, against a real RabbitMQ (BROKER_URL or local).

The fan-out every transport keeps is in test_transport_contract.py.
"""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import aio_pika
import pytest
from sqlalchemy import func, select

from eventkit.db import Database
from eventkit.inbox import ProcessedEvent
from eventkit.roster import dead_letter_stream, retry_stream, stream_subscription
from eventkit.settings import ServiceSettings
from eventkit.testing import async_wait_until
from eventkit.transports import Delivery, Outgoing
from eventkit.transports.rabbitmq import (
    QueueDeclaredOtherwise,
    RabbitMQConfig,
    RabbitMQSettings,
    RabbitMQTransport,
    config_from_settings,
)
from fixtures_rabbitmq import RABBITMQ_URL
from sample_domain import THINGS, attach_recorder, happened


def retry_queues(service: str) -> list[str]:
    """The delay queues a subscribing service declares (the default retry schedule)."""
    return [
        retry_stream(service, delay) for delay in RabbitMQConfig(url="", service="").retry_tiers
    ]


def transport(service: str) -> RabbitMQTransport:
    return RabbitMQTransport(RabbitMQConfig(url=RABBITMQ_URL, service=service))


async def test_queues_are_durable_and_bound_to_a_topic_exchange(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"a-{stream}"
    rabbitmq_names += [stream, stream_subscription(service, stream), dead_letter_stream(service)]
    rabbitmq_names += retry_queues(service)
    consumer = transport(service)

    async def handler(batch: Sequence[Delivery]) -> None:
        return None

    consumer.subscribe(stream, handler)
    await consumer.start()
    await consumer.stop()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        # passive declares fail unless the objects exist with these properties
        queue = await channel.declare_queue(stream_subscription(service, stream), passive=True)
        exchange = await channel.declare_exchange(stream, passive=True)
        await queue.bind(exchange, routing_key="#")


async def test_dead_letters_land_in_the_services_dlq_queue(rabbitmq_names: list[str]) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    rabbitmq_names.append(dead_letter_stream(service))
    producer = transport(service)
    await producer.start()
    try:
        await producer.publish_dead_letter(
            b"poison", {"x-error": "boom", "x-attempts": "4"}, key="agg-1"
        )
    finally:
        await producer.stop()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(dead_letter_stream(service), passive=True)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.body == b"poison"
        assert message.headers["aggregate-id"] == "agg-1"
        assert (message.headers["x-error"], message.headers["x-attempts"]) == ("boom", "4")


SETTINGS = {
    "BROKER_URL": "amqp://u:p@h:5672/v",
    "PREFETCH_COUNT": 50,
    "DEAD_LETTER_TOPIC": "parked",
    "MAX_RETRIES": 7,
    "RETRY_DELAYS_SECONDS": "0.5,9",
    "CONSUMER_BATCH_SIZE": 50,
    "CONSUMER_BATCH_WAIT_MS": 2,
    "QUEUE_TYPE": "classic",
    "DELIVERY_LIMIT": 5,
    "FIRST_EVENT_WAIT_SECONDS": 3,
    "UNKNOWN_EVENT_HOLD_SECONDS": 60,
}


def test_every_setting_reaches_its_config_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the environment, as a service reads them: ServiceSettings' and RabbitMQSettings'."""
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, str(value))
    settings = ServiceSettings(SERVICE_NAME="svc", PORT=0)
    assert config_from_settings(settings) == RabbitMQConfig(
        url="amqp://u:p@h:5672/v",
        service="svc",
        prefetch_count=50,
        dead_letter_topic="parked",
        max_retries=7,
        retry_delays_seconds=(0.5, 9.0),
        batch_size=50,
        batch_wait_ms=2,
        queue_type="classic",
        delivery_limit=5,
        first_event_wait_seconds=3,
        unknown_event_hold_seconds=60,
    )
    for name in SETTINGS:
        monkeypatch.delenv(name)
    defaults = config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0))
    assert defaults.prefetch_count > defaults.batch_size  # the next batch fills meanwhile
    assert defaults.dead_letters == "dlq.svc"
    assert (defaults.queue_type, defaults.delivery_limit) == ("quorum", 20)


async def test_prefetch_and_the_dead_letter_queue_come_from_the_config(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"svc-{stream}"
    parked = f"parked-{service}"
    rabbitmq_names += [stream, stream_subscription(service, stream), parked, *retry_queues(service)]
    config = RabbitMQConfig(
        url=RABBITMQ_URL, service=service, prefetch_count=7, dead_letter_topic=parked
    )
    rabbit = RabbitMQTransport(config)
    started: list[bytes] = []
    release = asyncio.Event()

    async def handler(batch: Sequence[Delivery]) -> None:
        started.extend(body for body, _ in batch)
        await release.wait()

    rabbit.subscribe(stream, handler)
    rabbit.declare_publisher(stream)
    await rabbit.start()
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        for n in range(20):
            await rabbit.publish(
                Outgoing(stream=stream, body=f"m{n}".encode(), key="k", event_type="T")
            )
        channel = await connection.channel()

        async def held_back() -> bool:
            queue = await channel.declare_queue(stream_subscription(service, stream), passive=True)
            return bool(started) and queue.declaration_result.message_count == 13

        # While a batch is held, 7 deliveries are unacknowledged (that batch, and the next
        # gathering behind it) and the other 13 wait in the queue.
        await async_wait_until(held_back, timeout=10, what="7 deliveries in flight, 13 waiting")
        release.set()
        await async_wait_until(
            lambda: asyncio.sleep(0, len(started) == 20), timeout=10, what="all 20 applied"
        )
        assert started == [f"m{n}".encode() for n in range(20)]  # in queue order
        await rabbit.publish_dead_letter(b"poison", {"x-error": "boom"})
        queue = await channel.declare_queue(parked, passive=True)
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"poison"
        await message.ack()
    finally:
        release.set()
        await rabbit.stop()
        await connection.close()


async def test_a_queue_whose_handlers_name_types_is_bound_to_those_only(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"svc-{stream}"
    rabbitmq_names += [stream, stream_subscription(service, stream), dead_letter_stream(service)]
    rabbitmq_names += retry_queues(service)
    rabbit = transport(service)
    received: list[bytes] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        received.extend(body for body, _ in batch)

    rabbit.subscribe(stream, handler, types={"Wanted", "AlsoWanted"})
    rabbit.declare_publisher(stream)
    await rabbit.start()
    try:
        for event_type in ("Wanted", "Unwanted", "AlsoWanted", "Unwanted"):
            if event_type == "Unwanted":  # no queue takes it: the broker hands it back
                with pytest.raises(Exception, match=r"NO_ROUTE"):
                    await rabbit.publish(
                        Outgoing(stream=stream, body=b"no", key="k", event_type=event_type)
                    )
            else:
                await rabbit.publish(
                    Outgoing(
                        stream=stream, body=event_type.encode(), key="k", event_type=event_type
                    )
                )
        await async_wait_until(
            lambda: asyncio.sleep(0, len(received) >= 2), timeout=10, what="the wanted two"
        )
    finally:
        await rabbit.stop()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(stream_subscription(service, stream), passive=True)
        assert queue.declaration_result.message_count == 0  # the unwanted were never routed here
    assert sorted(received) == [b"AlsoWanted", b"Wanted"]


async def test_a_publish_no_queue_takes_fails_so_the_outbox_keeps_it(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"svc-{stream}"
    rabbitmq_names += [stream, dead_letter_stream(service)]
    publisher = transport(service)
    publisher.declare_publisher(stream)  # no readers in its roster
    await publisher.start()
    try:
        with pytest.raises(Exception, match=r"NO_ROUTE"):
            await publisher.publish(Outgoing(stream=stream, body=b"lost?", key="k", event_type="T"))
    finally:
        await publisher.stop()


async def test_in_a_batch_only_the_message_no_queue_takes_fails(
    rabbitmq_names: list[str],
) -> None:
    read, unread = (f"test.{uuid.uuid4().hex[:8]}" for _ in range(2))
    service, reader = f"svc-{read}", f"reader-{read}"
    rabbitmq_names += [read, unread, dead_letter_stream(service), stream_subscription(reader, read)]
    publisher = transport(service)
    publisher.declare_publisher(read, subscribers=[reader])
    publisher.declare_publisher(unread)
    await publisher.start()
    sent = [(read, "a"), (unread, "b"), (read, "a"), (read, "c")]
    try:
        outcomes = await publisher.publish_batch(
            [Outgoing(stream=s, body=b"x", key=k, event_type="T") for s, k in sent], timeout=10
        )
    finally:
        await publisher.stop()
    assert [outcome is None for outcome in outcomes] == [True, False, True, True]
    assert "NO_ROUTE" in repr(outcomes[1])  # the relay keeps its row pending
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(stream_subscription(reader, read), passive=True)
        assert queue.declaration_result.message_count == 3


async def test_readers_that_start_after_the_publisher_get_what_it_sent_before(
    rabbitmq_names: list[str],
) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    publisher_name, reader_name = f"pub-{stream}", f"reader-{stream}"
    rabbitmq_names += [
        stream,
        dead_letter_stream(publisher_name),
        dead_letter_stream(reader_name),
        stream_subscription(reader_name, stream),
        *retry_queues(reader_name),
    ]
    publisher = transport(publisher_name)
    publisher.declare_publisher(stream, subscribers=[reader_name])
    await publisher.start()
    try:
        for n in range(3):
            await publisher.publish(
                Outgoing(stream=stream, body=f"early{n}".encode(), key="k", event_type="T")
            )
    finally:
        await publisher.stop()
    reader = transport(reader_name)
    received: list[bytes] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        received.extend(body for body, _ in batch)

    reader.subscribe(stream, handler)
    await reader.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, len(received) >= 3), timeout=10, what="the early three"
        )
    finally:
        await reader.stop()
    assert received == [b"early0", b"early1", b"early2"]


@pytest.mark.parametrize("kind", ["quorum", "classic"])
async def test_one_replica_takes_a_queue_and_the_next_takes_over_in_order(
    rabbitmq_names: list[str], kind: Literal["quorum", "classic"]
) -> None:
    """A single active consumer: a second replica of the service stands by while the first
    holds a batch, and takes the queue over when the first goes, starting with what the
    first had not acked, in order (an aggregate's events never pass each other)."""
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"sac-{stream}"
    rabbitmq_names += [stream, stream_subscription(service, stream), dead_letter_stream(service)]
    rabbitmq_names += retry_queues(service)
    first, second = (
        RabbitMQTransport(RabbitMQConfig(url=RABBITMQ_URL, service=service, queue_type=kind))
        for _ in range(2)
    )
    # On stop FastStream waits for running handlers (15 s by default) before it cancels the
    # consumer: the first goes with its batch unacked sooner.
    first.broker.config.broker_config.graceful_timeout = 0.5
    held, release = asyncio.Event(), asyncio.Event()
    standby: list[bytes] = []

    async def holds(batch: Sequence[Delivery]) -> None:
        held.set()
        await release.wait()  # a slow replica: its batch is not acked before it goes

    async def takes(batch: Sequence[Delivery]) -> None:
        standby.extend(body for body, _ in batch)

    first.subscribe(stream, holds)
    first.declare_publisher(stream)
    second.subscribe(stream, takes)
    await first.start()
    await second.start()
    try:
        for n in range(5):
            await first.publish(
                Outgoing(stream=stream, body=f"m{n}".encode(), key="k", event_type="T")
            )
        await async_wait_until(
            lambda: asyncio.sleep(0, held.is_set()), timeout=10, what="the first replica's batch"
        )
        await asyncio.sleep(0.5)  # time enough for a competing consumer to take a share
        assert standby == []
        await first.stop()
        await async_wait_until(
            lambda: asyncio.sleep(0, len(standby) >= 5), timeout=10, what="the takeover"
        )
    finally:
        release.set()
        await first.stop()
        await second.stop()
    sent = [f"m{n}".encode() for n in range(5)]
    if kind == "quorum":
        assert standby == sent
    else:
        # A classic queue may hand the standby the ready messages before it requeues what
        # the first held (a graceful stop cancels the consumer before the channel closes):
        # none is lost or doubled, and the consumer's positions put a key back in order.
        assert sorted(standby) == sent


async def test_a_batch_takes_the_real_subscriber_path_under_faststreams_test_broker(
    db: Database,
) -> None:
    """FastStream's TestRabbitBroker: our subscriber, batcher and consumer, no broker."""
    from faststream.rabbit import TestRabbitBroker

    rabbit = RabbitMQTransport(RabbitMQConfig(url="amqp://unused/", service="probe"))
    applied = attach_recorder(db, rabbit)
    async with TestRabbitBroker(rabbit.broker):
        for thing in ("a", "b"):
            event = happened(thing)
            await rabbit.publish(
                Outgoing(stream=THINGS, body=event.to_bytes(), key=thing, event_type=event.type)
            )
    assert applied == ["a", "b"]
    assert await db_count(db) == 2


async def db_count(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)


async def declared_with(name: str, arguments: dict[str, Any]) -> bool:
    """Whether queue `name` is declared with exactly these arguments: the broker takes a
    declaration again only if they are the same."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        try:
            channel = await connection.channel()
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            return False
        return True


def queues_of(service: str, stream: str, kind: str, delivery_limit: int) -> dict[str, Any]:
    """The queues a subscribing service declares, and their arguments."""
    at_least_once = (
        {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if kind == "quorum"
        else {}
    )
    limit = {"x-delivery-limit": delivery_limit} if kind == "quorum" else {}
    return {
        stream_subscription(service, stream): {
            "x-queue-type": kind,
            "x-single-active-consumer": True,
            "x-dead-letter-exchange": "dlq",
            "x-dead-letter-routing-key": service,
            **limit,
            **at_least_once,
        },
        dead_letter_stream(service): {
            "x-queue-type": kind,
            "x-max-length": 100_000,
            "x-overflow": "drop-head",
        },
        **{
            retry_stream(service, delay): {
                "x-queue-type": kind,
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": "retry",
                **at_least_once,
            }
            for delay in RabbitMQConfig(url="", service="").retry_tiers
        },
    }


async def assert_declared(service: str, stream: str, kind: str, delivery_limit: int) -> None:
    other = "classic" if kind == "quorum" else "quorum"
    for name, arguments in queues_of(service, stream, kind, delivery_limit).items():
        assert await declared_with(name, arguments), name
        assert not await declared_with(name, {**arguments, "x-queue-type": other}), name


async def test_queues_are_quorum_and_a_message_handed_back_too_often_is_dead_lettered(
    rabbitmq_names: list[str],
) -> None:
    """Quorum queues outlive a node of a cluster; the delivery limit stops a message that
    crashes its consumer from being delivered for ever."""
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"q-{stream}"
    rabbitmq_names += [stream, stream_subscription(service, stream), dead_letter_stream(service)]
    rabbitmq_names += retry_queues(service)
    rabbit = RabbitMQTransport(RabbitMQConfig(url=RABBITMQ_URL, service=service, delivery_limit=2))
    deliveries: list[str] = []

    async def crashes(batch: Sequence[Delivery]) -> None:
        deliveries.extend(headers.get("x-delivery-count", "0") for _, headers in batch)
        raise RuntimeError("the consumer dies on this one")

    rabbit.subscribe(stream, crashes)
    rabbit.declare_publisher(stream)
    await rabbit.start()
    try:
        await rabbit.publish(Outgoing(stream=stream, body=b"crasher", key="k", event_type="T"))
        await async_wait_until(
            lambda: asyncio.sleep(0, len(deliveries) >= 3), timeout=20, what="3 deliveries"
        )
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(dead_letter_stream(service), passive=True)

            async def dead_lettered() -> aio_pika.abc.AbstractIncomingMessage | None:
                return await queue.get(fail=False)

            message = await async_wait_until(dead_lettered, what="the dead-lettered message")
            await message.ack()
        assert message.body == b"crasher"
        deaths = message.headers["x-death"]  # a table for each time it was dead-lettered
        assert isinstance(deaths, list) and isinstance(deaths[0], dict), deaths
        assert deaths[0]["reason"] == "delivery_limit"
        assert deliveries == ["0", "1", "2"]  # the first and two handed back: the limit
    finally:
        await rabbit.stop()
    await assert_declared(service, stream, "quorum", delivery_limit=2)


async def test_classic_queues_as_a_setting(rabbitmq_names: list[str]) -> None:
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"c-{stream}"
    rabbitmq_names += [stream, stream_subscription(service, stream), dead_letter_stream(service)]
    rabbitmq_names += retry_queues(service)
    config = config_from_settings(
        ServiceSettings(SERVICE_NAME=service, PORT=0, BROKER_URL=RABBITMQ_URL),
        RabbitMQSettings(QUEUE_TYPE="classic"),
    )
    rabbit = RabbitMQTransport(config)

    async def handler(batch: Sequence[Delivery]) -> None:
        return None

    rabbit.subscribe(stream, handler)
    await rabbit.start()
    await rabbit.stop()
    await assert_declared(service, stream, "classic", delivery_limit=20)


async def test_a_queue_declared_otherwise_before_stops_start_with_the_reason(
    rabbitmq_names: list[str],
) -> None:
    """A deployment from before quorum queues: its classic queues are not changed behind
    its back (they hold its events); start says what to do."""
    stream = f"test.{uuid.uuid4().hex[:8]}"
    service = f"old-{stream}"
    rabbitmq_names += [stream, stream_subscription(service, stream), dead_letter_stream(service)]
    rabbitmq_names += retry_queues(service)
    classic = RabbitMQTransport(
        RabbitMQConfig(url=RABBITMQ_URL, service=service, queue_type="classic")
    )

    async def handler(batch: Sequence[Delivery]) -> None:
        return None

    classic.subscribe(stream, handler)
    await classic.start()
    await classic.stop()
    quorum = transport(service)
    quorum.subscribe(stream, handler)
    with pytest.raises(QueueDeclaredOtherwise, match="QUEUE_TYPE") as refused:
        await quorum.start()
    assert "PRECONDITION_FAILED" in str(refused.value)
