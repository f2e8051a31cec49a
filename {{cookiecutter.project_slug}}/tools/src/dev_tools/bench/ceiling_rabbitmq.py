"""The ceiling phase (ceiling.py) on RabbitMQ, with aio-pika: the scratch topic exchange and
its queues, the publisher, and the no-op consumer, which runs as a process of its own:

    python -m dev_tools.bench.ceiling_rabbitmq BROKER_URL EXCHANGE QUEUE EVENTS TIMEOUT

The consumer reads QUEUE (bound to EXCHANGE by `declare`). It prints `ready` once it can
receive, then, after EVENTS deliveries or TIMEOUT seconds,
`done <time.monotonic()> <CPU seconds since ready> <deliveries>`. This module imports
aio-pika and nothing of the project, so that the consumer starts in a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TYPE_CHECKING

import aio_pika

if TYPE_CHECKING:
    from eventkit.settings import ServiceSettings

CLIENT = "aio-pika"
PREFETCH = 1000  # unacked deliveries per consumer
ACK_EVERY = 100  # one `multiple` ack per this many deliveries


async def declare(config: ServiceSettings, exchange: str, queues: list[str]) -> None:
    """The scratch topic exchange, and a durable queue bound to it for each consumer."""
    connection = await aio_pika.connect(config.broker_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for name in queues:
            queue = await channel.declare_queue(name, durable=True)
            await queue.bind(declared, routing_key="#")


async def publish(
    config: ServiceSettings, exchange: str, messages: list[tuple[bytes, str, str]], in_flight: int
) -> None:
    """Every message persistent, `in_flight` at a time awaiting the broker's confirm."""
    connection = await aio_pika.connect(config.broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        gate = asyncio.Semaphore(in_flight)

        async def one(body: bytes, key: str, event_type: str) -> None:
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                type=event_type,
                headers={"aggregate-id": key},
            )
            async with gate:
                await target.publish(message, routing_key=event_type, mandatory=True)

        await asyncio.gather(*(one(*m) for m in messages))


async def remove(config: ServiceSettings, exchange: str, queues: list[str]) -> list[str]:
    """Delete the queues and the exchange; the names that could not be deleted."""
    left = []
    connection = await aio_pika.connect(config.broker_url)
    async with connection:
        for name in [*queues, exchange]:
            channel = await connection.channel()  # a failed delete closes its channel
            try:
                if name == exchange:
                    await channel.exchange_delete(name)
                else:
                    await channel.queue_delete(name)
            except Exception:
                left.append(name)
    return left


def say(line: str) -> None:
    print(line, flush=True)


async def consume(url: str, queue_name: str, events: int, timeout: float) -> None:
    """Take deliveries PREFETCH at a time; ack every ACK_EVERY-th with `multiple`."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(queue_name)
        received = 0
        got_all = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            received += 1
            if received % ACK_EVERY == 0 or received >= events:
                await message.ack(multiple=True)
            if received >= events:
                got_all.set()

        await queue.consume(on_message)
        say("ready")
        cpu = time.process_time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got_all.wait(), timeout)
        say(f"done {time.monotonic()} {time.process_time() - cpu} {received}")


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    url, _exchange, queue, events, timeout = argv
    asyncio.run(consume(url, queue, int(events), float(timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
