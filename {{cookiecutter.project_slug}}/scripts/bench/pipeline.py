"""Phase 2, pipeline: UserCreated events straight onto the user stream, timed until every
subscriber of the roster has applied them all."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from scripts.bench.stack import READERS, STREAM, consumed, publish_all, transport, user_created


async def pipeline(
    http: httpx.AsyncClient, events: int, in_flight: int, timeout: float
) -> dict[str, Any]:
    """Publish `events` UserCreated to the user stream; time until every reader applied them."""
    run = uuid.uuid4().hex[:8]
    messages = [user_created(run, n) for n in range(events)]
    before = {name: await consumed(http, name) for name in READERS}
    producer = transport("bench-producer")
    await producer.start()
    finished: dict[str, float] = {}
    try:
        started = time.perf_counter()
        publishing = asyncio.create_task(publish_all(producer, STREAM, messages, in_flight))
        deadline = time.monotonic() + timeout
        applied = dict.fromkeys(READERS, 0)
        while len(finished) < len(READERS):
            await asyncio.sleep(0.2)  # /metrics costs the consumers too: not too often
            for name in READERS:
                if name in finished:
                    continue
                applied[name] = await consumed(http, name) - before[name]
                if applied[name] >= events:
                    finished[name] = time.perf_counter() - started
            if time.monotonic() > deadline:
                publishing.cancel()
                raise TimeoutError(f"after {timeout:.0f}s the consumers had applied {applied}")
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
    }
