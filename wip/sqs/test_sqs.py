"""SqsTransport against a real moto_server (started once per session on a free port).

Every test names its own topics and queues (a random suffix), so they share the server.
Run: .venv/bin/pytest -q test_sqs.py
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
import pytest_asyncio

from eventkit_protocol import Delivery, Outgoing
from motoserver import FAKE_AWS_ENV, MotoServer
from sqs import SqsConfig, SqsTransport, retry_queue_name, sqs_name




@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto_server for the session; the fake credentials are set in this process only."""
    saved = {k: os.environ.get(k) for k in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    server = MotoServer()
    try:
        yield server.start()
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def names() -> Callable[[str], str]:
    suffix = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{suffix}"


class Factory:
    """`make(service, **config)`: an SqsTransport on moto; `make.made` lists them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[SqsTransport] = []

    def __call__(self, service: str, **options: Any) -> SqsTransport:
        settings: dict[str, Any] = {"endpoint_url": self.url, "wait_time_seconds": 1, **options}
        transport = SqsTransport(SqsConfig(service=service, **settings))
        self.made.append(transport)
        return transport


@pytest_asyncio.fixture
async def make(moto_url: str) -> AsyncIterator[Factory]:
    """Transports made in a test are stopped after it."""
    factory = Factory(moto_url)
    yield factory
    for transport in factory.made:
        await transport.stop()


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
) -> None:
    """Poll `check` (sync or async) every 50 ms until it holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def event(key: str, n: int, event_type: str = "Happened", event_id: str | None = None) -> bytes:
    return json.dumps(
        {"id": event_id or str(uuid.uuid4()), "type": event_type, "aggregate_id": key, "sequence": n}
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


async def test_one_event_fans_out_to_three_services(make: Factory, names: Callable[[str], str]) -> None:
    stream = names("orders.events")
    received: dict[str, list[Delivery]] = {}
    for service in ("billing", "shipping", "stats"):
        got, handler = recorder()
        received[service] = got
        make(names(service)).subscribe(stream, handler)
    producer = make(names("orders"))
    producer.declare_publisher(stream)
    for transport in make.made:
        await transport.start()
    body = event("order-1", 1, "OrderPlaced")
    await producer.publish(
        Outgoing(stream=stream, body=body, key="order-1", event_type="OrderPlaced",
                 headers={"traceparent": "00-abc-01"})
    )
    await wait_until(lambda: all(received.values()), 15, "all three services to get it")
    for transport in make.made[:3]:
        queue = sqs_name(f"{transport.config.service}.{stream}")
        await wait_until(lambda: drained(transport, queue), 15, "each queue to be empty")
    assert {service: len(got) for service, got in received.items()} == {
        "billing": 1, "shipping": 1, "stats": 1
    }
    for got in received.values():
        [(got_body, headers)] = got
        assert got_body == body
        assert headers["event-type"] == "OrderPlaced" and headers["aggregate-id"] == "order-1"
        assert headers["traceparent"] == "00-abc-01" and headers["x-stream"] == stream


async def test_order_per_key_across_100_events_of_5_keys_with_two_replicas(
    make: Factory, names: Callable[[str], str]
) -> None:
    stream = names("ledger.events")
    service = names("reader")
    log: list[tuple[str, int]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for body, _ in batch:
            decoded = json.loads(body)
            log.append((decoded["aggregate_id"], decoded["sequence"]))
        await asyncio.sleep(0.01)  # give the other replica a chance at the queue

    for _ in range(2):  # two replicas of one service: one queue, FIFO groups keep order
        make(service).subscribe(stream, handler)
    producer = make(names("ledger"))
    producer.declare_publisher(stream)
    for transport in make.made:
        await transport.start()
    keys = [f"acct-{k}" for k in range(5)]
    messages = [
        Outgoing(stream=stream, body=event(keys[n % 5], n // 5 + 1), key=keys[n % 5], event_type="T")
        for n in range(100)
    ]
    assert await producer.publish_batch(messages[:50], timeout=30) == [None] * 50
    for message in messages[50:]:
        await producer.publish(message)
    await wait_until(lambda: len(log) >= 100, 30, "100 events")
    assert len(log) == 100
    for key in keys:
        assert [n for k, n in log if k == key] == list(range(1, 21))


async def test_an_event_published_again_with_its_id_is_delivered_once(
    make: Factory, names: Callable[[str], str]
) -> None:
    """MessageDeduplicationId = the event id. The duplicates are sent while the first is
    still queued: moto forgets an id once its message is deleted (AWS keeps it 5 min)."""
    stream = names("dedup.events")
    got, handler = recorder()
    reader = names("reader")
    consumer = make(reader)
    consumer.subscribe(stream, handler)
    producer = make(names("writer"))
    producer.declare_publisher(stream, subscribers=[reader])  # declares the reader's queue
    await producer.start()
    same = event("k", 1, event_id=str(uuid.uuid4()))
    for _ in range(3):  # e.g. the outbox relay sending again after a lost confirm
        await producer.publish(Outgoing(stream=stream, body=same, key="k", event_type="T"))
    other = event("k", 2)
    await producer.publish(Outgoing(stream=stream, body=other, key="k", event_type="T"))
    queue = sqs_name(f"{reader}.{stream}")
    assert await queue_depth(producer, queue) == 2  # published before the reader first ran
    await consumer.start()
    await wait_until(lambda: len(got) >= 2, 15, "two events")
    await wait_until(lambda: drained(consumer, queue), 15, "the queue to be empty")
    assert [body for body, _ in got] == [same, other]


async def test_a_filter_policy_takes_only_the_named_types(make: Factory, names: Callable[[str], str]) -> None:
    stream = names("mixed.events")
    wanted, wanted_handler = recorder()
    everything, all_handler = recorder()
    picky = make(names("picky"))
    picky.subscribe(stream, wanted_handler, types={"Wanted", "AlsoWanted"})
    broad = make(names("broad"))
    broad.subscribe(stream, all_handler)
    producer = make(names("mixer"))
    producer.declare_publisher(stream)
    for transport in (picky, broad, producer):
        await transport.start()
    for event_type in ("Wanted", "Unwanted", "AlsoWanted", "Unwanted"):
        await producer.publish(
            Outgoing(stream=stream, body=event("k", 1, event_type), key="k", event_type=event_type)
        )
    await wait_until(lambda: len(everything) >= 4 and len(wanted) >= 2, 15, "4 and 2 events")
    assert [h["event-type"] for _, h in everything] == ["Wanted", "Unwanted", "AlsoWanted", "Unwanted"]
    assert [h["event-type"] for _, h in wanted] == ["Wanted", "AlsoWanted"]
    # The unwanted never reached the picky queue (SNS filtered them).
    assert await queue_depth(picky, sqs_name(f"{picky.config.service}.{stream}")) == 0


async def test_a_restart_with_other_types_updates_the_one_subscription(make: Factory, names: Callable[[str], str]) -> None:
    stream = names("restart.events")
    service = names("svc")
    first = make(service)
    first.subscribe(stream, recorder()[1], types={"A"})
    await first.start()
    await first.stop()
    got, handler = recorder()
    second = make(service)
    second.subscribe(stream, handler, types={"B"})
    producer = make(names("pub"))
    producer.declare_publisher(stream)
    await second.start()
    await producer.start()
    topic = await second._topic(stream)
    subscriptions = (await second.sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"]
    assert len(subscriptions) == 1
    for event_type in ("A", "B"):
        await producer.publish(Outgoing(stream=stream, body=event("k", 1, event_type), key="k", event_type=event_type))
    await wait_until(lambda: bool(got), 15, "the B")
    assert [h["event-type"] for _, h in got] == ["B"]


async def test_a_failing_batch_comes_back_after_the_hand_back_delay_then_is_dead_lettered(
    make: Factory, names: Callable[[str], str]
) -> None:
    stream = names("poison.events")
    calls: list[float] = []
    healthy = asyncio.Event()
    replayed: list[Delivery] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        if healthy.is_set():
            replayed.extend(batch)
            return
        calls.append(time.monotonic())
        raise RuntimeError("cannot apply")

    consumer = make(names("fragile"), delivery_limit=3, handback_seconds=1)
    consumer.subscribe(stream, handler)
    consumer.declare_publisher(stream)
    await consumer.start()
    body = event("k", 1)
    await consumer.publish(Outgoing(stream=stream, body=body, key="k", event_type="T"))
    letters: list[Any] = []

    async def dead_lettered() -> bool:
        letters[:] = await consumer.list_dead_letters()
        return bool(letters)

    deadline = time.monotonic() + 30
    while not await dead_lettered():
        assert time.monotonic() < deadline, "the message to be dead-lettered"
        await asyncio.sleep(0.2)
    assert len(calls) == 3  # delivered delivery_limit times, then SQS moved it
    assert all(later - earlier >= 0.9 for earlier, later in zip(calls, calls[1:]))
    [letter] = letters
    assert letter.body == body and letter.stream == stream
    assert letter.attempts == 3 and "redrive" in letter.reason
    # Listing left it there; a replay gives it back to this service's handler, once.
    assert len(await consumer.list_dead_letters()) == 1
    healthy.set()
    assert await consumer.replay_dead_letters() == 1
    await wait_until(lambda: bool(replayed), 15, "the replayed message")
    assert [b for b, _ in replayed] == [body]
    assert await consumer.list_dead_letters() == []


async def test_publish_retry_comes_back_after_its_delay_then_dead_letters_with_reason(
    make: Factory, names: Callable[[str], str]
) -> None:
    """What eventkit's Consumer does: retry with x-attempts until max_retries, then park."""
    stream = names("retry.events")
    consumer = make(names("mine"), max_retries=2, retry_delays_seconds=(1.0, 2.0))
    other_got, other_handler = recorder()
    other = make(names("other"))
    other.subscribe(stream, other_handler)
    attempts_seen: list[tuple[int, float]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for body, headers in batch:
            attempt = int(headers.get("x-attempts", "0")) + 1
            attempts_seen.append((attempt - 1, time.monotonic()))
            if attempt > consumer.config.max_retries:
                await consumer.publish_dead_letter(
                    body, {"x-error": "boom", "x-attempts": str(attempt), "x-original-topic": stream},
                    key=headers.get("aggregate-id", ""),
                )
            else:
                await consumer.publish_retry(
                    stream, body, {**headers, "x-attempts": str(attempt)},
                    key=headers.get("aggregate-id", ""), delay=consumer.config.retry_delay(attempt),
                )

    consumer.subscribe(stream, handler)
    consumer.declare_publisher(stream)
    await other.start()
    await consumer.start()
    body = event("agg-7", 1)
    await consumer.publish(Outgoing(stream=stream, body=body, key="agg-7", event_type="T"))
    letters: list[Any] = []
    deadline = time.monotonic() + 30
    while not letters:
        assert time.monotonic() < deadline, "the dead letter"
        letters = await consumer.list_dead_letters()
        await asyncio.sleep(0.2)
    assert [a for a, _ in attempts_seen] == [0, 1, 2]
    gaps = [later - earlier for (_, earlier), (_, later) in zip(attempts_seen, attempts_seen[1:])]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9  # held by SQS for each delay
    [letter] = letters
    assert (letter.body, letter.reason, letter.attempts, letter.stream) == (body, "boom", 3, stream)
    assert letter.headers["aggregate-id"] == "agg-7"
    assert len(other_got) == 1  # the retries reached only the service that sent them


async def test_a_batch_of_25_with_one_too_large_fails_only_that_one(make: Factory, names: Callable[[str], str]) -> None:
    stream = names("bulk.events")
    got, handler = recorder()
    consumer = make(names("bulk-reader"))
    consumer.subscribe(stream, handler)
    producer = make(names("bulk-writer"))
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
    await wait_until(lambda: len(got) >= 24, 15, "24 events")
    assert sorted(body for body, _ in got) == sorted(m.body for n, m in enumerate(messages) if n != 12)


async def test_an_idle_consumer_makes_one_receive_per_long_poll(make: Factory, names: Callable[[str], str]) -> None:
    stream = names("quiet.events")
    consumer = make(names("idle"), wait_time_seconds=1)
    consumer.subscribe(stream, recorder()[1])
    await consumer.start()
    calls: list[tuple[float, str, str]] = []

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((time.monotonic(), model.name, params.get("QueueUrl", "")))

    consumer.sqs.meta.events.register("before-parameter-build.sqs.*", count)
    queue_url = consumer._queue_urls[sqs_name(f"{consumer.config.service}.{stream}")]
    retry_url = consumer._queue_urls[retry_queue_name(consumer.config.service)]
    urls = (queue_url, retry_url)
    await wait_until(lambda: {u for *_, u in calls} >= set(urls), 5, "both pollers' receives")
    # 5 s from each poller's first receive seen (a window, not a wait for a result)
    await asyncio.sleep(5.2)
    window = list(calls)
    assert {name for _, name, _ in window} == {"ReceiveMessage"}  # nothing else while idle
    per_queue = {}
    for url in urls:
        first = min(t for t, _, u in window if u == url)
        per_queue[url] = sum(1 for t, _, u in window if u == url and first <= t < first + 5.0)
    assert per_queue == {queue_url: 5, retry_url: 5}  # one receive per 1 s long poll
