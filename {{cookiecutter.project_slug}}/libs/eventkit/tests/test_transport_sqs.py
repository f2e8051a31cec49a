"""What only the SNS + SQS transport does, against the session's moto_server (fixtures_sqs).

The fan-out every transport keeps is in test_transport_contract.py. Every test names its
own topics and queues (a random suffix), so they share the server.
"""

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from eventkit.settings import ServiceSettings
from eventkit.testing import async_wait_until
from eventkit.transports import Delivery, Outgoing, create_transport
from eventkit.transports.sqs import (
    LOCAL_URL,
    DeadLetter,
    SqsConfig,
    SqsTransport,
    config_from_settings,
    retry_queue_name,
    sqs_name,
)
from fixtures_sqs import sqs_config

SETTINGS = {
    "BROKER": "sqs",
    "BROKER_URL": "http://moto:4566",
    "AWS_REGION": "eu-west-1",
    "SQS_VISIBILITY_TIMEOUT_SECONDS": 45,
    "SQS_WAIT_TIME_SECONDS": 7,
    "DELIVERY_LIMIT": 7,
    "SQS_HANDBACK_SECONDS": 2,
    "DEAD_LETTER_RETENTION_SECONDS": 3600,
    "DEAD_LETTER_TOPIC": "parked",
    "MAX_RETRIES": 4,
    "RETRY_DELAYS_SECONDS": "0.5,9",
    "CONSUMER_BATCH_SIZE": 50,
    "CONSUMER_BATCH_WAIT_MS": 2,
    "FIRST_EVENT_WAIT_SECONDS": 3,
    "UNKNOWN_EVENT_HOLD_SECONDS": 60,
}


def test_every_setting_reaches_its_config_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the environment, as a service reads them: ServiceSettings' and SqsSettings'."""
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, str(value))
    settings = ServiceSettings(SERVICE_NAME="svc", PORT=0)
    assert config_from_settings(settings) == SqsConfig(
        service="svc",
        region="eu-west-1",
        endpoint_url="http://moto:4566",
        visibility_timeout=45,
        wait_time_seconds=7,
        delivery_limit=7,
        handback_seconds=2,
        dead_letter_retention_seconds=3600,
        dead_letter_topic="parked",
        max_retries=4,
        retry_delays_seconds=(0.5, 9.0),
        batch_size=50,
        batch_wait_ms=2,
        first_event_wait_seconds=3,
        unknown_event_hold_seconds=60,
    )
    transport = create_transport(settings)  # BROKER=sqs: the adapter's from_settings
    assert isinstance(transport, SqsTransport) and transport.config.service == "svc"
    monkeypatch.setenv("BROKER_URL", "aws")  # AWS's own endpoints
    assert config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0)).endpoint_url == ""
    for name in SETTINGS:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER", "sqs")
    defaults = config_from_settings(ServiceSettings(SERVICE_NAME="svc", PORT=0))
    assert defaults.endpoint_url == LOCAL_URL  # BROKER_URL unset: local-up's moto_server
    assert defaults.dead_letters == "dlq.svc"
    assert (defaults.delivery_limit, defaults.wait_time_seconds) == (20, 5)
    assert defaults.visibility_timeout == 30 and defaults.region == "us-east-1"


def names() -> Callable[[str], str]:
    suffix = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{suffix}"


class Factory:
    """`make(service, **config)`: an SqsTransport on moto; `make.made` lists them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[SqsTransport] = []

    def __call__(self, service: str, **options: Any) -> SqsTransport:
        transport = SqsTransport(sqs_config(self.url, service, **options))
        self.made.append(transport)
        return transport


@pytest.fixture
async def make(moto_url: str) -> AsyncIterator[Factory]:
    """Transports made in a test are stopped after it."""
    factory = Factory(moto_url)
    yield factory
    for transport in factory.made:
        await transport.stop()


def holds(condition: bool) -> Awaitable[bool]:
    """`condition` for async_wait_until."""
    return asyncio.sleep(0, condition)


def event(key: str, n: int, event_type: str = "Happened", event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or str(uuid.uuid4()),
            "type": event_type,
            "aggregate_id": key,
            "sequence": n,
        }
    ).encode()


def recorder() -> tuple[list[Delivery], Callable[[Sequence[Delivery]], Awaitable[None]]]:
    got: list[Delivery] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        got.extend(batch)

    return got, handler


async def queue_depth(transport: SqsTransport, queue: str) -> int:
    """Messages in `queue`, visible and in flight."""
    url = (await transport.sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    answer = await transport.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = answer["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


async def drained(transport: SqsTransport, queue: str) -> bool:
    return await queue_depth(transport, queue) == 0


def test_one_naming_function_maps_eventkit_names_to_fifo_names() -> None:
    assert sqs_name("user.events") == "user-events.fifo"
    assert sqs_name("dlq.billing") == "dlq-billing.fifo"
    assert retry_queue_name("billing") == "retry-billing.fifo"
    long = sqs_name("s" * 200)
    assert len(long) == 80 and long.endswith(".fifo") and long != sqs_name("s" * 201)


async def test_one_event_fans_out_to_three_services(make: Factory) -> None:
    name = names()
    stream = name("orders.events")
    received: dict[str, list[Delivery]] = {}
    for service in ("billing", "shipping", "stats"):
        got, handler = recorder()
        received[service] = got
        make(name(service)).subscribe(stream, handler)
    producer = make(name("orders"))
    producer.declare_publisher(stream)
    for transport in make.made:
        await transport.start()
    body = event("order-1", 1, "OrderPlaced")
    await producer.publish(
        Outgoing(
            stream=stream,
            body=body,
            key="order-1",
            event_type="OrderPlaced",
            headers={"traceparent": "00-abc-01"},
        )
    )
    await async_wait_until(
        lambda: holds(all(received.values())), timeout=15, what="all three services to get it"
    )
    for transport in make.made[:3]:
        queue = sqs_name(f"{transport.config.service}.{stream}")
        await async_wait_until(
            lambda: drained(transport, queue),  # noqa: B023 (awaited in this iteration)
            timeout=15,
            what="each queue to be empty",
        )
    assert {service: len(got) for service, got in received.items()} == {
        "billing": 1,
        "shipping": 1,
        "stats": 1,
    }
    for got in received.values():
        [(got_body, headers)] = got
        assert got_body == body
        assert headers["event-type"] == "OrderPlaced" and headers["aggregate-id"] == "order-1"
        assert headers["traceparent"] == "00-abc-01" and headers["x-stream"] == stream


async def ledger(make: Factory, replicas: int) -> list[tuple[str, int]]:
    """100 events of 5 keys (half by publish_batch, half one by one) read by `replicas`
    replicas of one service; the (key, sequence) of each delivery, in the order handled."""
    name = names()
    stream = name("ledger.events")
    service = name("reader")
    log: list[tuple[str, int]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for body, _ in batch:
            decoded = json.loads(body)
            log.append((decoded["aggregate_id"], decoded["sequence"]))
        await asyncio.sleep(0.01)  # give another replica a chance at the queue

    for _ in range(replicas):  # replicas of one service share its queue
        make(service).subscribe(stream, handler)
    producer = make(name("ledger"))
    producer.declare_publisher(stream)
    for transport in make.made:
        await transport.start()
    keys = [f"acct-{k}" for k in range(5)]
    messages = [
        Outgoing(
            stream=stream, body=event(keys[n % 5], n // 5 + 1), key=keys[n % 5], event_type="T"
        )
        for n in range(100)
    ]
    assert await producer.publish_batch(messages[:50], timeout=30) == [None] * 50
    for message in messages[50:]:
        await producer.publish(message)
    await async_wait_until(lambda: holds(len(set(log)) >= 100), timeout=30, what="100 events")
    return log


async def test_order_per_key_across_100_events_of_5_keys(make: Factory) -> None:
    log = await ledger(make, replicas=1)
    assert len(log) == 100
    for key in {k for k, _ in log}:
        assert [n for k, n in log if k == key] == list(range(1, 21))


async def test_two_replicas_share_one_queue(make: Factory) -> None:
    """Each event reaches the service. Order per key across replicas is AWS's (a group's
    later messages wait while one is in flight); moto cannot be held to it: two receives
    at the same moment may both take messages of one group (moto 5.2.6 checks the group
    without a lock), and may then hand one message to both, a redelivery the inbox drops."""
    log = await ledger(make, replicas=2)
    assert set(log) == {(f"acct-{k}", n) for k in range(5) for n in range(1, 21)}


async def test_an_event_published_again_is_delivered_again(make: Factory) -> None:
    """The relay sends an event again only on purpose (a lost confirm, a broker that lost
    it), so the topic must not drop it as a duplicate: each publish has its own
    deduplication id, and the consumer's inbox drops what it has applied. The copies are
    sent while the first is still queued, where moto, too, would drop one under the same
    id (it forgets an id once its message is deleted; AWS keeps it 5 minutes)."""
    name = names()
    stream = name("again.events")
    got, handler = recorder()
    reader = name("reader")
    consumer = make(reader)
    consumer.subscribe(stream, handler)
    producer = make(name("writer"))
    producer.declare_publisher(stream, subscribers=[reader])  # declares the reader's queue
    await producer.start()
    same = event("k", 1, event_id=str(uuid.uuid4()))
    for _ in range(3):  # e.g. the outbox relay sending again after a lost confirm
        await producer.publish(Outgoing(stream=stream, body=same, key="k", event_type="T"))
    again = [Outgoing(stream=stream, body=same, key="k", event_type="T")]
    assert await producer.publish_batch(again, timeout=10) == [None]
    other = event("k", 2)
    await producer.publish(Outgoing(stream=stream, body=other, key="k", event_type="T"))
    queue = sqs_name(f"{reader}.{stream}")
    assert await queue_depth(producer, queue) == 5  # published before the reader first ran
    await consumer.start()
    await async_wait_until(lambda: holds(len(got) >= 5), timeout=15, what="five deliveries")
    await async_wait_until(lambda: drained(consumer, queue), timeout=15, what="an empty queue")
    assert [body for body, _ in got] == [same, same, same, same, other]


async def test_a_filter_policy_takes_only_the_named_types(make: Factory) -> None:
    name = names()
    stream = name("mixed.events")
    wanted, wanted_handler = recorder()
    everything, all_handler = recorder()
    picky = make(name("picky"))
    picky.subscribe(stream, wanted_handler, types={"Wanted", "AlsoWanted"})
    broad = make(name("broad"))
    broad.subscribe(stream, all_handler)
    producer = make(name("mixer"))
    producer.declare_publisher(stream)
    for transport in (picky, broad, producer):
        await transport.start()
    for event_type in ("Wanted", "Unwanted", "AlsoWanted", "Unwanted"):
        await producer.publish(
            Outgoing(stream=stream, body=event("k", 1, event_type), key="k", event_type=event_type)
        )
    await async_wait_until(
        lambda: holds(len(everything) >= 4 and len(wanted) >= 2), timeout=15, what="4 and 2"
    )
    assert [h["event-type"] for _, h in everything] == [
        "Wanted",
        "Unwanted",
        "AlsoWanted",
        "Unwanted",
    ]
    assert [h["event-type"] for _, h in wanted] == ["Wanted", "AlsoWanted"]
    # The unwanted never reached the picky queue (SNS filtered them).
    assert await queue_depth(picky, sqs_name(f"{picky.config.service}.{stream}")) == 0


async def test_a_restart_with_other_types_updates_the_one_subscription(make: Factory) -> None:
    name = names()
    stream = name("restart.events")
    service = name("svc")
    first = make(service)
    first.subscribe(stream, recorder()[1], types={"A"})
    await first.start()
    await first.stop()
    got, handler = recorder()
    second = make(service)
    second.subscribe(stream, handler, types={"B"})
    producer = make(name("pub"))
    producer.declare_publisher(stream)
    await second.start()
    await producer.start()
    topic = await second._topic(stream)
    answer = await second.sns.list_subscriptions_by_topic(TopicArn=topic)
    assert len(answer["Subscriptions"]) == 1
    for event_type in ("A", "B"):
        await producer.publish(
            Outgoing(stream=stream, body=event("k", 1, event_type), key="k", event_type=event_type)
        )
    await async_wait_until(lambda: holds(bool(got)), timeout=15, what="the B")
    assert [h["event-type"] for _, h in got] == ["B"]


async def test_a_failing_batch_comes_back_after_the_hand_back_delay_then_is_dead_lettered(
    make: Factory,
) -> None:
    name = names()
    stream = name("poison.events")
    calls: list[float] = []
    healthy = asyncio.Event()
    replayed: list[Delivery] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        if healthy.is_set():
            replayed.extend(batch)
            return
        calls.append(time.monotonic())
        raise RuntimeError("cannot apply")

    consumer = make(name("fragile"), delivery_limit=3, handback_seconds=1)
    consumer.subscribe(stream, handler)
    consumer.declare_publisher(stream)
    await consumer.start()
    body = event("k", 1)
    await consumer.publish(Outgoing(stream=stream, body=body, key="k", event_type="T"))
    letters: list[DeadLetter] = []

    async def dead_lettered() -> bool:
        letters[:] = await consumer.list_dead_letters()
        return bool(letters)

    await async_wait_until(
        dead_lettered, timeout=30, interval=0.2, what="the message to be dead-lettered"
    )
    assert len(calls) == 3  # delivered delivery_limit times, then SQS moved it
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(calls))
    [letter] = letters
    assert letter.body == body and letter.stream == stream
    assert letter.attempts == 3 and "redrive" in letter.reason
    # Listing left it there; a replay gives it back to this service's handler, once.
    assert len(await consumer.list_dead_letters()) == 1
    healthy.set()
    assert await consumer.replay_dead_letters() == 1
    await async_wait_until(lambda: holds(bool(replayed)), timeout=15, what="the replayed one")
    assert [b for b, _ in replayed] == [body]
    assert await consumer.list_dead_letters() == []


async def test_a_failing_batch_of_one_key_comes_back_whole_and_in_order(make: Factory) -> None:
    """Handed back together, a group's messages come back together, in order (moto hands
    a group back last-first when its messages time out together: `_hand_back`)."""
    name = names()
    stream = name("handback.events")
    batches: list[list[int]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        batches.append([json.loads(body)["sequence"] for body, _ in batch])
        if len(batches) < 3:
            raise RuntimeError("not yet")

    consumer = make(name("slow"), handback_seconds=1)
    consumer.subscribe(stream, handler)
    producer = make(name("writer"))
    producer.declare_publisher(stream, subscribers=[consumer.config.service])
    await producer.start()
    for n in (1, 2, 3):
        await producer.publish(Outgoing(stream=stream, body=event("k", n), key="k", event_type="T"))
    await consumer.start()
    await async_wait_until(lambda: holds(len(batches) >= 3), timeout=20, what="three batches")
    assert batches == [[1, 2, 3]] * 3


async def test_publish_retry_comes_back_after_its_delay_then_dead_letters_with_reason(
    make: Factory,
) -> None:
    """What eventkit's Consumer does: retry with x-attempts until max_retries, then park."""
    name = names()
    stream = name("retry.events")
    consumer = make(name("mine"), max_retries=2, retry_delays_seconds=(1.0, 2.0))
    other_got, other_handler = recorder()
    other = make(name("other"))
    other.subscribe(stream, other_handler)
    attempts_seen: list[tuple[int, float]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for body, headers in batch:
            attempt = int(headers.get("x-attempts", "0")) + 1
            attempts_seen.append((attempt - 1, time.monotonic()))
            key = headers.get("aggregate-id", "")
            if attempt > consumer.config.max_retries:
                await consumer.publish_dead_letter(
                    body,
                    {"x-error": "boom", "x-attempts": str(attempt), "x-original-topic": stream},
                    key=key,
                )
            else:
                await consumer.publish_retry(
                    stream,
                    body,
                    {**headers, "x-attempts": str(attempt)},
                    key=key,
                    delay=consumer.config.retry_delay(attempt),
                )

    consumer.subscribe(stream, handler)
    consumer.declare_publisher(stream)
    await other.start()
    await consumer.start()
    body = event("agg-7", 1)
    await consumer.publish(Outgoing(stream=stream, body=body, key="agg-7", event_type="T"))
    letters: list[DeadLetter] = []

    async def dead_lettered() -> bool:
        letters[:] = await consumer.list_dead_letters()
        return bool(letters)

    await async_wait_until(dead_lettered, timeout=30, interval=0.2, what="the dead letter")
    assert [a for a, _ in attempts_seen] == [0, 1, 2]
    times = [at for _, at in attempts_seen]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9  # held by SQS for each delay
    [letter] = letters
    assert (letter.body, letter.reason, letter.attempts, letter.stream) == (body, "boom", 3, stream)
    assert letter.headers["aggregate-id"] == "agg-7"
    assert len(other_got) == 1  # the retries reached only the service that sent them


async def test_a_retry_held_for_long_keeps_no_shorter_retry_of_its_key_waiting(
    make: Factory,
) -> None:
    """An event held for hours (a type not known yet) and a dead letter replayed with the
    same key ("" for events without one): the replay comes back after its own delay. With
    one FIFO group per key, it waited behind the held one (e2e test_dead_letters, SQS)."""
    name = names()
    stream = name("held.events")
    consumer = make(name("mine"))
    got, handler = recorder()
    consumer.subscribe(stream, handler)
    await consumer.start()
    held, replayed = event("", 1, "Unknown"), event("", 2)
    await consumer.publish_retry(stream, held, {"x-attempts": "1"}, key="", delay=3600)
    await consumer.publish_retry(stream, replayed, {"x-attempts": "0"}, key="", delay=0.5)
    await async_wait_until(lambda: holds(bool(got)), timeout=15, what="the short retry")
    assert [body for body, _ in got] == [replayed]


async def test_a_delete_sqs_does_not_answer_leaves_the_consumer_polling(
    make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS unreachable for the delete after a batch: the poller went on to the next batch
    (before, the failed delete ended the queue's poller until the process restarted)."""
    name = names()
    stream = name("settle.events")
    consumer = make(name("mine"))
    got, handler = recorder()
    consumer.subscribe(stream, handler)
    consumer.declare_publisher(stream)
    await consumer.start()
    delete = consumer._delete
    failed: list[int] = []

    async def delete_fails_once(url: str, messages: Sequence[Any]) -> None:
        if not failed:
            failed.append(len(messages))
            raise ConnectionError("SQS does not answer")
        await delete(url, messages)

    monkeypatch.setattr(consumer, "_delete", delete_fails_once)
    first, second = event("a", 1), event("b", 1)
    await consumer.publish(Outgoing(stream=stream, body=first, key="a", event_type="T"))
    await async_wait_until(lambda: holds(bool(failed)), timeout=15, what="the failed delete")
    await consumer.publish(Outgoing(stream=stream, body=second, key="b", event_type="T"))
    await async_wait_until(
        lambda: holds(second in [body for body, _ in got]), timeout=15, what="the next batch"
    )


async def test_a_batch_of_25_with_one_too_large_fails_only_that_one(make: Factory) -> None:
    name = names()
    stream = name("bulk.events")
    got, handler = recorder()
    consumer = make(name("bulk-reader"))
    consumer.subscribe(stream, handler)
    producer = make(name("bulk-writer"))
    producer.declare_publisher(stream)
    await consumer.start()
    await producer.start()
    messages = [
        Outgoing(stream=stream, body=event(f"k{n % 3}", n), key=f"k{n % 3}", event_type="T")
        for n in range(25)
    ]
    too_large = json.dumps({"id": str(uuid.uuid4()), "pad": "x" * (256 * 1024)}).encode()
    messages[12] = Outgoing(stream=stream, body=too_large, key="alone", event_type="T")
    outcomes = await producer.publish_batch(messages, timeout=30)
    assert [n for n, outcome in enumerate(outcomes) if outcome is not None] == [12]
    await async_wait_until(lambda: holds(len(got) >= 24), timeout=15, what="24 events")
    sent = [m.body for n, m in enumerate(messages) if n != 12]
    assert sorted(body for body, _ in got) == sorted(sent)


async def test_a_stopped_consumer_leaves_no_receive_open_to_take_the_next_message(
    make: Factory,
) -> None:
    """A receive cut off at the client stays open at the endpoint, which hands it the next
    message: seen only after the visibility timeout. A stop lets its long poll end instead,
    so the consumer's next process gets the message at once (a service restarted)."""
    name = names()
    stream = name("restart.events")
    first = make(name("billing"), wait_time_seconds=3, visibility_timeout=30)
    first.subscribe(stream, recorder()[1])
    producer = make(name("users"))
    producer.declare_publisher(stream)
    await first.start()
    await producer.start()
    await asyncio.sleep(0.5)  # the first consumer's long poll is open at the endpoint
    await first.stop()
    got, handler = recorder()
    second = make(name("billing"), wait_time_seconds=3, visibility_timeout=30)
    second.subscribe(stream, handler)
    await second.start()
    body = event("user-1", 1, "UserCreated")
    await producer.publish(
        Outgoing(stream=stream, body=body, key="user-1", event_type="UserCreated", headers={})
    )
    await async_wait_until(
        lambda: holds(bool(got)), timeout=10, what="the restarted consumer to get it"
    )
    assert [delivered for delivered, _ in got] == [body]


async def test_an_idle_consumer_makes_one_receive_per_long_poll(make: Factory) -> None:
    name = names()
    stream = name("quiet.events")
    consumer = make(name("idle"), wait_time_seconds=1)
    consumer.subscribe(stream, recorder()[1])
    await consumer.start()
    calls: list[tuple[float, str, str]] = []

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((time.monotonic(), model.name, params.get("QueueUrl", "")))

    consumer.sqs.meta.events.register("before-parameter-build.sqs.*", count)
    queue_url = consumer._queue_urls[sqs_name(f"{consumer.config.service}.{stream}")]
    retry_url = consumer._queue_urls[retry_queue_name(consumer.config.service)]
    urls = (queue_url, retry_url)
    await async_wait_until(
        lambda: holds({u for *_, u in calls} >= set(urls)),
        timeout=5,
        what="both pollers' receives",
    )
    # 5 s from each poller's first receive seen (a window, not a wait for a result)
    await asyncio.sleep(5.2)
    window = list(calls)
    assert {name for _, name, _ in window} == {"ReceiveMessage"}  # nothing else while idle
    per_queue = {}
    for url in urls:
        first = min(t for t, _, u in window if u == url)
        per_queue[url] = sum(1 for t, _, u in window if u == url and first <= t < first + 5.0)
    assert per_queue == {queue_url: 5, retry_url: 5}  # one receive per 1 s long poll
