"""One shape for a background job that works off rows a commit left behind (the outbox
relay, a service's own worker): woken by the commit that gave it work, with a slow
poll as the safety net for a wake that was missed (another replica's commit, a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Round = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass(eq=False)
class Poller:
    """Runs `round` after each wake, or `poll_seconds` after the last round, until stopped.

    An error in a round is logged and the round runs again at the next wake or poll: the
    rows it did not finish are still there. `between` runs after every round (e.g. gauges).
    """

    name: str
    round: Round
    poll_seconds: float
    between: Round = _nothing
    stopping: bool = field(default=False, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def wake(self) -> None:
        """Called after a commit that left work, so it goes without waiting for a poll."""
        self._wake.set()

    def start(self) -> None:
        self.stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float = 10.0) -> None:
        """Let the current round finish (up to `grace` seconds), then end: cancelling
        mid-wait is racy on Python 3.11, and a finished round leaves nothing half done."""
        if self._task is None:
            return
        self.stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await self.round()
            except Exception:  # the broker, the database or another server down: rows wait
                log.warning("%s: a round failed; trying again", self.name, exc_info=True)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.stopping or (task is not None and task.cancelling()):
                    raise
                # A call cancelled under us (a client reconnecting): keep going.
                log.warning("%s: a call was cancelled; trying again", self.name)
            with contextlib.suppress(Exception):
                await self.between()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
