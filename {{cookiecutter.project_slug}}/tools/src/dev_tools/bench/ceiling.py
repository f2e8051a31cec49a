"""Phase 1, ceiling: what the broker and its plain client deliver in the services' fan-out
shape, with no FastStream, no eventkit and no database.

One scratch stream, read by as many no-op consumers as the user stream has readers, each a
process of its own as the services are, each a reader of its own (a consumer group or a
queue, as the broker has them). Events/s from the first publish until every consumer has
received every event. The scratch names are unique to the run and removed at the end,
whether or not the phase succeeds.

What is the broker's own (its client, how the scratch stream is declared, published to and
read, and the consumer process) is in ceiling_<broker>.py, picked by the BROKER setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import time
import uuid
from typing import Any

from dev_tools import ROOT
from dev_tools.bench.stack import READERS, broker_kind, settings, user_created


def broker_module() -> str:
    """The module of the broker that the BROKER setting names."""
    return f"dev_tools.bench.ceiling_{broker_kind()}"


async def start_consumer(
    scratch: str, group: str, events: int, timeout: float
) -> asyncio.subprocess.Process:
    """A no-op consumer process of the scratch stream, as the reader `group`."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        broker_module(),
        settings().broker_url,
        scratch,
        group,
        str(events),
        str(timeout),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_line(process: asyncio.subprocess.Process, expected: str, timeout: float) -> str:
    """The consumer's next line, which must start with `expected`."""
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), timeout)).decode().strip()
    if not line.startswith(expected):
        raise RuntimeError(f"a ceiling consumer said {line!r} (exit {process.returncode})")
    return line


async def ceiling(events: int, in_flight: int, timeout: float) -> dict[str, Any]:
    """Publish `events` to a scratch stream with one no-op consumer per reader."""
    broker = importlib.import_module(broker_module())
    config = settings()
    run = uuid.uuid4().hex[:8]
    scratch = f"bench.ceiling.{run}"
    # The readers (consumer groups or queues), one per reader of the user stream.
    groups = [f"{scratch}.{n}" for n in range(len(READERS))]
    messages = [user_created(run, n) for n in range(events)]
    consumers: list[asyncio.subprocess.Process] = []
    declared = time.monotonic()
    try:
        await broker.declare(config, scratch, groups)
        for group in groups:
            consumers.append(await start_consumer(scratch, group, events, timeout))
        for consumer in consumers:
            await read_line(consumer, "ready", timeout)
        ready_seconds = time.monotonic() - declared
        started = time.monotonic()
        await broker.publish(config, scratch, messages, in_flight)
        publish_seconds = time.monotonic() - started
        finished: list[float] = []
        cpu: list[float] = []
        for consumer, group in zip(consumers, groups, strict=True):
            _, at, cpu_seconds, received = (await read_line(consumer, "done", timeout)).split()
            if int(received) < events:
                raise TimeoutError(f"{group} received {received} of {events} in {timeout:.0f}s")
            finished.append(float(at) - started)
            cpu.append(float(cpu_seconds))
    finally:
        for consumer in consumers:
            if consumer.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    consumer.terminate()
            await consumer.wait()
        left = await broker.remove(config, scratch, groups)
    seconds = max(finished)
    return {
        "events": events,
        "consumers": len(groups),
        "client": broker.CLIENT,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "publish_events_per_second": round(events / publish_seconds, 1),
        "per_consumer_events_per_second": [round(events / s, 1) for s in finished],
        "consumer_cpu_ms_per_event": [round(s * 1000 / events, 4) for s in cpu],
        "consumers_ready_seconds": round(ready_seconds, 2),
        "scratch": scratch,
        "left_behind": left,
    }
