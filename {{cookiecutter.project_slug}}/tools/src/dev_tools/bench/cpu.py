"""CPU time of the stack's processes: those that `make local-up` runs under supervisord.

The pipeline and saturation phases take a snapshot before and after, and divide what each
process used by the events or sign-ups in between. A stack that local-up did not start
(`make up`, Kubernetes) has no PIDs here: its CPU is not measured.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass

import psutil

from contracts import ROSTER
from dev_tools import local

BROKER = "broker"  # local-up's program name for the broker it starts (dev_tools/local.py)
BENCH = "bench"  # this process: the load generator and the pollers
# A line of `supervisorctl status`: "user-1    RUNNING   pid 4242, uptime 0:01:02".
RUNNING = re.compile(r"^(\S+)\s+RUNNING\s+pid (\d+),", re.MULTILINE)


def stack_processes() -> dict[str, int]:
    """Program name -> PID of every running program of local-up's supervisord."""
    if not local.supervisord_running():
        return {}
    return {name: int(pid) for name, pid in RUNNING.findall(local.ctl("status").stdout)}


def service_of(program: str) -> str | None:
    """The roster service a program runs (`billing`, or replica `billing-1`), or None."""
    base = re.sub(r"-\d+$", "", program)
    return base if base in ROSTER.names else None


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds (user + system) so far of each program's process tree, by process, and
    when (time.monotonic())."""

    cpu: dict[str, dict[tuple[int, float], float]]
    at: float


def _tree_cpu(pid: int) -> dict[tuple[int, float], float]:
    """CPU seconds of a process and its descendants (a broker may run as a child of a
    wrapper script), keyed by (pid, start time) so that a reused PID is not mistaken."""
    seconds: dict[tuple[int, float], float] = {}
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return seconds
    for process in tree:
        try:
            with process.oneshot():
                times = process.cpu_times()
                seconds[(process.pid, process.create_time())] = times.user + times.system
        except psutil.Error:
            continue  # it exited meanwhile
    return seconds


def snapshot(programs: dict[str, int]) -> Snapshot:
    """The CPU used so far by each of `programs` (name -> PID) and by this process."""
    cpu = {name: _tree_cpu(pid) for name, pid in programs.items()}
    times = psutil.Process(os.getpid()).cpu_times()
    cpu[BENCH] = {(os.getpid(), 0.0): times.user + times.system}
    return Snapshot(cpu, time.monotonic())


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each program used between two snapshots (a process gone by `after` is
    not counted; one started in between counts whole)."""
    return {
        name: round(
            sum(seconds - before.cpu.get(name, {}).get(key, 0.0) for key, seconds in tree.items()),
            3,
        )
        for name, tree in after.cpu.items()
    }


async def idle(programs: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    """Milliseconds of CPU per second each program uses with nothing to do (consumers that
    long-poll the broker, a broker's timers): a cost per second, not per sign-up."""
    before = snapshot(programs)
    await asyncio.sleep(seconds)
    return {
        name: round(s * 1000 / seconds, 1) for name, s in used(before, snapshot(programs)).items()
    }


async def settle(
    programs: dict[str, int], idle_ms: dict[str, float], timeout: float, window: float = 2.0
) -> float | None:
    """Wait until the stack is back near its idle use; the seconds it took (None: it was
    still busy after `timeout`, and the step goes on anyway).

    Work a phase left behind (the emails of the pipeline's 10,000 sign-ups, sent after
    their events were applied) would otherwise be counted as the next step's CPU. Quiet
    means a `window` of at most the idle use plus half of it (at least 50 ms a second:
    /proc counts CPU in 10 ms ticks).
    """
    if not programs:
        return 0.0
    started = time.monotonic()
    idle_stack = stack_total(idle_ms)
    quiet = idle_stack + max(50.0, idle_stack / 2)  # ms per second
    for _ in range(max(1, round(timeout / window))):
        before = snapshot(programs)
        await asyncio.sleep(window)
        after = snapshot(programs)
        if stack_total(used(before, after)) * 1000 / (after.at - before.at) <= quiet:
            return round(time.monotonic() - started, 1)
    return None


def stack_total(seconds: dict[str, float]) -> float:
    """CPU seconds of the stack: every service process, and the broker if local-up runs it."""
    return round(sum(s for name, s in seconds.items() if service_of(name) or name == BROKER), 3)


def per_unit_ms(seconds: dict[str, float], units: int) -> dict[str, float]:
    """Milliseconds of CPU per event or sign-up, by program."""
    return {name: round(s * 1000 / units, 3) if units else 0.0 for name, s in seconds.items()}
