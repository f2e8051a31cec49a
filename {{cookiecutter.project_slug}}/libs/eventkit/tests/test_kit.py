"""The kit's broker watchdog: what counts as an outage, and what it resends after one."""

import asyncio
from datetime import datetime

import pytest

from eventkit import ServiceKit, ServiceSettings
from eventkit.transports.memory import MemoryTransport
from sample_domain import things_roster


class Settings(ServiceSettings):
    SERVICE_NAME: str = "source"
    PORT: int = 9997


class ScriptedPings(MemoryTransport):
    """Answers pings as scripted (True: answered), then answers every one."""

    def __init__(self, answers: list[bool]) -> None:
        super().__init__()
        self.answers = answers
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        return self.answers.pop(0) if self.answers else True


async def resends_after(answers: list[bool]) -> list[datetime]:
    """The `since` of each resend the watchdog asks for while pings answer as scripted."""
    transport = ScriptedPings(answers)
    kit = ServiceKit(Settings(), things_roster(), transport=transport)
    # Past the script, and past the second resend (5 pings after the first).
    enough = len(answers) + 10
    resends: list[datetime] = []

    async def resend_since(since: datetime) -> int:
        resends.append(since)
        return 0

    kit.relay.resend_since = resend_since  # type: ignore[method-assign]
    watchdog = asyncio.create_task(kit._watch_broker(every=0.001, misses=3))
    try:
        async with asyncio.timeout(10):
            while transport.pings < enough:
                await asyncio.sleep(0.001)
    finally:
        watchdog.cancel()
    assert kit.broker_up
    return resends


@pytest.mark.parametrize("answers", [[False], [True, False, False, True, False, False]])
async def test_a_slow_ping_or_two_is_no_outage_and_resends_nothing(answers: list[bool]) -> None:
    assert await resends_after(answers) == []


async def test_three_missed_pings_are_an_outage_resent_from_its_first_miss() -> None:
    resends = await resends_after([True, False, False, False, False, True])
    assert len(resends) == 2  # from before the outage, then once more from its start
    assert resends[0] < resends[1]


async def test_stop_waits_for_its_background_tasks_before_closing_the_database(
    database_url: str,
) -> None:
    """A task cancelled mid-query still has its connection to clean up; closing the pool
    under it left a test run waiting for ever (user tests, 1 run in ~30)."""
    kit = ServiceKit(
        Settings(DATABASE_URL=database_url), things_roster(), transport=MemoryTransport()
    )
    order: list[str] = []

    async def prune() -> dict[str, int]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # handing its connection back
            order.append("pruner ended")
            raise
        return {}

    dispose = kit.db.dispose

    async def dispose_in_order() -> None:
        order.append("database closed")
        await dispose()

    kit.prune = prune  # type: ignore[method-assign]
    kit.db.dispose = dispose_in_order  # type: ignore[method-assign]
    await kit.start()
    await asyncio.wait_for(kit.connected.wait(), timeout=10)
    await kit.stop()
    assert order == ["pruner ended", "database closed"]
