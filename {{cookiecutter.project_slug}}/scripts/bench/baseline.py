"""Phase 1, broker_baseline: the raw broker, no services, on a scratch stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

from eventkit import new_event
from scripts.bench.stack import publish_all, transport, user_created

SCRATCH = "bench.scratch"


async def raw_broker(events: int, in_flight: int, timeout: float) -> dict[str, Any]:
    """Publish and consume `events` envelopes on a scratch stream: the broker alone."""
    run = uuid.uuid4().hex[:8]
    marker = f"bench-{run}-".encode()
    warmup_marker = f"warmup-{run}".encode()
    messages = [user_created(run, n) for n in range(events)]
    received = 0
    warmed = asyncio.Event()
    done = asyncio.Event()
    last_at = 0.0

    async def on_message(body: bytes, headers: Mapping[str, str] | None = None) -> None:
        nonlocal received, last_at
        if warmup_marker in body:
            warmed.set()
        elif marker in body:
            received += 1
            if received >= events:
                last_at = time.perf_counter()
                done.set()

    # The subscriber first: it declares what it reads from where the broker needs that.
    subscriber = transport("bench")
    subscriber.subscribe(SCRATCH, on_message)
    producer = transport("bench-producer")
    await subscriber.start()
    try:
        await producer.start()
        try:
            # Until the subscriber receives: a consumer group may take seconds to form, and
            # a topic is created by its first message.
            warmup = new_event("BenchWarmup", {"run": f"warmup-{run}"}, source="bench").to_bytes()
            started = time.perf_counter()
            while not warmed.is_set():
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"the scratch subscriber got nothing in {timeout:.0f}s")
                await producer.publish(SCRATCH, warmup, key=run, event_type="BenchWarmup")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(warmed.wait(), 1.0)
            warmup_seconds = time.perf_counter() - started
            started = time.perf_counter()
            publish_seconds = await publish_all(producer, SCRATCH, messages, in_flight)
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"the scratch subscriber received {received} of {events} in {timeout:.0f}s"
                ) from None
        finally:
            await producer.stop()
    finally:
        await subscriber.stop()
    seconds = last_at - started
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "publish_events_per_second": round(events / publish_seconds, 1),
        "subscriber_ready_seconds": round(warmup_seconds, 2),
    }
