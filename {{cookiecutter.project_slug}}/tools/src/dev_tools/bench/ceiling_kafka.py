"""The ceiling phase (ceiling.py) on Kafka, with aiokafka: the scratch topic, the publisher,
and the no-op consumer, which runs as a process of its own:

    python -m dev_tools.bench.ceiling_kafka BROKER_URL TOPIC GROUP EVENTS TIMEOUT

The consumer reads TOPIC in consumer group GROUP. It prints `ready` once it has partitions,
then, after EVENTS deliveries or TIMEOUT seconds,
`done <time.monotonic()> <CPU seconds since ready> <deliveries>`. This module imports
aiokafka and nothing of the project, so that the consumer starts in a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventkit.transports.kafka import KafkaSettings

if TYPE_CHECKING:
    from eventkit.settings import ServiceSettings

CLIENT = "aiokafka"


def servers(url: str) -> list[str]:
    return [b.strip() for b in url.split(",") if b.strip()]


async def declare(config: ServiceSettings, topic: str, groups: list[str]) -> None:
    """The scratch topic, with the user stream's partitions; each group joins it on start."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers(config.broker_url), request_timeout_ms=5000
    )
    await admin.start()
    try:
        kafka = KafkaSettings()  # as the services create their topics
        topics = [NewTopic(topic, kafka.STREAM_PARTITIONS, kafka.STREAM_REPLICATION)]
        await admin.create_topics(topics)
    finally:
        await admin.close()


async def publish(
    config: ServiceSettings, topic: str, messages: list[tuple[bytes, str, str]], in_flight: int
) -> None:
    """Every message, pipelined: the producer batches what is sent before it is awaited.

    `in_flight` does not apply: the producer's batches bound what is in flight.
    """
    acks = KafkaSettings().KAFKA_ACKS  # as the services publish
    producer = AIOKafkaProducer(
        bootstrap_servers=servers(config.broker_url),
        acks=acks if acks == "all" else int(acks),
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, body, key=key.encode()) for body, key, _ in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def remove(config: ServiceSettings, topic: str, groups: list[str]) -> list[str]:
    """Delete the topic; what is left of it or of its groups afterwards."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers(config.broker_url), request_timeout_ms=5000
    )
    await admin.start()
    try:
        with contextlib.suppress(Exception):  # gone already, or never made: checked below
            await admin.delete_topics([topic])
        left = [t for t in await admin.list_topics() if t == topic]
        # A group lives as long as its topic's offsets on the embedded broker; Kafka drops an
        # empty group once its offsets expire (aiokafka has no call to delete one).
        with contextlib.suppress(Exception):
            left += [g for g, _ in await admin.list_consumer_groups() if g in groups]
        return left
    finally:
        await admin.close()


def say(line: str) -> None:
    print(line, flush=True)


async def consume(url: str, topic: str, group: str, events: int, timeout: float) -> None:
    """Fetch in batches, as many as the broker has; commit the offsets once per batch."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers(url),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # As eventkit's Kafka transport sets them.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    try:
        received = 0
        deadline = time.monotonic() + timeout
        while not consumer.assignment():  # joining the group
            received += sum(map(len, (await consumer.getmany(timeout_ms=100)).values()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group} got no partitions in {timeout:.0f}s")
        say("ready")
        cpu = time.process_time()
        deadline = time.monotonic() + timeout
        while received < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            if batch:
                received += sum(map(len, batch.values()))
                await consumer.commit()
        say(f"done {time.monotonic()} {time.process_time() - cpu} {received}")
    finally:
        await consumer.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    url, topic, group, events, timeout = argv
    asyncio.run(consume(url, topic, group, int(events), float(timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
