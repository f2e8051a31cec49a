"""The clock a consumer's waits run on: the wall clock, unless a test sets another.

A tentative position (FIRST_EVENT_WAIT_SECONDS) and a held event (UNKNOWN_EVENT_HOLD_SECONDS)
fall due on it. The pipeline simulation (tests/simulation) sets its simulated clock here, so
a day of retries passes in a second and a seed replays exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_source: Callable[[], float] = time.time


def now() -> float:
    """Seconds since the epoch."""
    return _source()


def utcnow() -> datetime:
    return datetime.fromtimestamp(_source(), UTC)


async def sleep(seconds: float) -> None:
    """Wait `seconds` on the wall clock; under another clock only yield (its time passes
    when its owner says, as the simulation's does between steps)."""
    await asyncio.sleep(seconds if _source is time.time else 0)


@contextmanager
def use(source: Callable[[], float]) -> Iterator[None]:
    """Inside the block, time is what `source` says (seconds since the epoch)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
