"""Phase 2, pipeline: UserCreated events straight onto the user stream, timed until every
subscriber of the roster has applied them all, and the CPU each process spent on them.

"Applied" is what each service's /metrics says: the growth of its
`eventkit_events_consumed_total{stream=..., type="UserCreated"}`, counted once an event's
transaction has committed. The events go through eventkit's transport, as the user
service's outbox relay sends them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from dev_tools.bench import cpu
from dev_tools.bench.stack import (
    PRODUCER,
    READERS,
    STREAM,
    applied_all,
    consumed,
    publish_all,
    transport,
    user_created,
)


async def pipeline(
    http: httpx.AsyncClient,
    events: int,
    in_flight: int,
    timeout: float,
    programs: dict[str, int],
) -> dict[str, Any]:
    """Publish `events` UserCreated to the user stream; time until every reader applied them.

    `programs` (name -> PID, cpu.stack_processes()) are the processes whose CPU is counted."""
    run = uuid.uuid4().hex[:8]
    messages = [user_created(run, n) for n in range(events)]
    before = {name: await consumed(http, name) for name in READERS}
    # Named as the stream's producer, it declares nothing that service has not (its dead
    # letters): the benchmark leaves nothing behind on the broker.
    producer = transport(PRODUCER)
    await producer.start()
    try:
        cpu_before = cpu.snapshot(programs)
        started = time.perf_counter()
        publishing = asyncio.create_task(publish_all(producer, STREAM, messages, in_flight))
        try:
            done = await applied_all(http, before, events, timeout)
        except TimeoutError:
            publishing.cancel()
            raise
        finished = {name: at - started for name, at in done.items()}
        cpu_used = cpu.used(cpu_before, cpu.snapshot(programs))
        publish_seconds = await publishing
    finally:
        await producer.stop()
    seconds = max(finished.values())
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "publish_events_per_second": round(events / publish_seconds, 1),
        "per_consumer_events_per_second": {
            name: round(events / finished[name], 1) for name in READERS
        },
        "cpu_seconds": cpu_used,
        "cpu_ms_per_event": cpu.per_unit_ms(cpu_used, events),
        "stack_cpu_ms_per_event": (
            round(cpu.stack_total(cpu_used) * 1000 / events, 3) if programs else None
        ),
    }
