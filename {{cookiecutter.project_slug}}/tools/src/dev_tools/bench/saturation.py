"""Phase 3, saturation: sign-ups over HTTP at stepped rates until the stack falls behind.

Each step (fanout.py) offers `POST /users` at one rate for `step_seconds`, on a fixed
schedule that does not wait for answers. After the last answer the step waits until every
reader has applied as many UserCreated as the step had sign-ups (the consumers drained), so
a step starts on an idle stack and its CPU counts every sign-up's whole fan-out. Then, by
default (`lag_from="inbox"`), it reads every sign-up's fan-out lag from the producer's feed
and the readers' inboxes (inbox.py), outside the CPU it measures; with "polling", about
`follow` sign-ups a second were followed to their fan-out during the step instead. The
steps stop after the first one whose served rate falls more than TOLERANCE below the
offered rate.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx

from dev_tools.bench import cpu
from dev_tools.bench.fanout import http_fanout
from dev_tools.bench.inbox import admin_headers, feed_end, step_lags
from dev_tools.bench.stack import READERS, applied_all, consumed

TOLERANCE = 0.10  # served below (1 - TOLERANCE) x offered: the stack fell behind
SETTLE_SECONDS = 60.0  # the longest a step waits for the stack to be back near idle
LAG_FROM = ("inbox", "polling")  # how the fan-out lag is measured: the first is the default


def fell_behind(offered: float, served: float, tolerance: float = TOLERANCE) -> bool:
    """Whether a step served fewer sign-ups per second than offered, by more than tolerance."""
    return served < offered * (1 - tolerance)


def follow_every(rate: float, follow: float) -> int:
    """Follow every n-th sign-up, so that about `follow` a second are followed at `rate`."""
    return max(1, round(rate / follow)) if follow > 0 else 1


async def drain(
    http: httpx.AsyncClient, before: dict[str, int], signups: int, stall: float
) -> float | None:
    """Seconds until every reader has applied `signups` UserCreated since `before` (its
    counts then); None if they stopped applying short of that for `stall` seconds."""
    started = time.perf_counter()
    try:
        done = await applied_all(http, before, signups, stall)
    except TimeoutError:
        return None
    return round(max(done.values()) - started, 2)


async def saturation(
    http: httpx.AsyncClient,
    steps: list[float],
    step_seconds: float,
    *,
    follow: float,
    poll: float,
    lag_from: str = LAG_FROM[0],
    timeout: float,
    programs: dict[str, int],
    idle: dict[str, float],
) -> dict[str, Any]:
    """Each of `steps` (sign-ups per second) in turn, up to the first that fell behind.

    `programs` are the processes whose CPU is counted (cpu.stack_processes()), `idle` the
    CPU milliseconds per second each uses with nothing to do (cpu.idle())."""
    results: list[dict[str, Any]] = []
    polling = lag_from == "polling"
    headers = admin_headers()
    feed_at = 0 if polling else await feed_end(http, headers)
    for rate in steps:
        settled = await cpu.settle(programs, idle, min(timeout, SETTLE_SECONDS))
        print(f"bench:   {rate:g} sign-ups/s for {step_seconds:g} s ...", flush=True)
        before = {name: await consumed(http, name) for name in READERS}
        began = datetime.now(UTC)
        cpu_before = cpu.snapshot(programs)
        step = await http_fanout(
            http,
            rate,
            step_seconds,
            polling=polling,
            follow_every=follow_every(rate, follow),
            poll=poll,
            timeout=timeout,
        )
        step["drain_seconds"] = await drain(http, before, step["served"], timeout)
        step["settle_seconds"] = settled  # waited before the step for a quiet stack
        cpu_after = cpu.snapshot(programs)
        if not polling:  # after the CPU snapshot: reading the records is not the step's
            lags, feed_at = await step_lags(http, began, feed_at, headers)
            step |= {"lag_from": "inbox", **lags}
        cpu_used = cpu.used(cpu_before, cpu_after)
        step["cpu_seconds"] = cpu_used
        step["cpu_ms_per_signup"] = cpu.per_unit_ms(cpu_used, step["served"])
        served = step["served"]
        # This process's own: the load generator (and, polling, the pollers).
        step["bench_cpu_ms_per_signup"] = (
            round(cpu_used.get(cpu.BENCH, 0.0) * 1000 / served, 3) if served else None
        )
        stack, idle_stack = cpu.stack_total(cpu_used), cpu.stack_total(idle) / 1000
        elapsed = cpu_after.at - cpu_before.at
        step["stack_cpu_ms_per_signup"] = (
            round(stack * 1000 / served, 2) if served and programs else None
        )
        # What the stack would have used idle over the same time, taken off.
        step["stack_cpu_ms_per_signup_above_idle"] = (
            round((stack - idle_stack * elapsed) * 1000 / served, 2)
            if served and programs
            else None
        )
        step["fell_behind"] = fell_behind(rate, step["served_per_second"])
        results.append(step)
        if step["fell_behind"]:
            break
    kept_up = [step["offered_per_second"] for step in results if not step["fell_behind"]]
    return {
        "lag_from": lag_from,
        "step_seconds": step_seconds,
        "tolerance": TOLERANCE,
        "steps": results,
        # The highest offered rate served in full (within the tolerance); None if none was.
        "sustained_per_second": max(kept_up, default=None),
        "fell_behind_at": next(
            (step["offered_per_second"] for step in results if step["fell_behind"]), None
        ),
    }
