"""The short run of the pipeline simulation in `make test`: fixed seeds and a few new ones.

Each seed runs the real services on SQLite (and, with TEST_POSTGRES_URL, a few on
PostgreSQL) with the faults its seed draws, leaving out the kinds KNOWN_FAULTS lists, and
must keep every invariant. A failure names the seed, the shortest fault schedule that
still fails and the command that replays it. `make simulate` runs many more.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from eventkit import inbox
from tests.simulation.engine import STEPS, RunResult, replay_command, run_seed, shrink
from tests.simulation.faults import Fault, draw_faults
from tests.simulation.seeds import (
    FIXED_POSTGRES_SEEDS,
    FIXED_SEEDS,
    default_setting,
    session_new_seeds,
)

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
SKIP_KNOWN = ("--known skip",)

RUNS = [pytest.param(seed, False, id=f"sqlite-{seed}") for seed in FIXED_SEEDS]
RUNS += [pytest.param(seed, False, id=f"sqlite-new-{seed}") for seed in session_new_seeds()]
if POSTGRES_URL:
    RUNS += [pytest.param(seed, True, id=f"postgres-{seed}") for seed in FIXED_POSTGRES_SEEDS]


async def explain(result: RunResult) -> str:
    shortest = await shrink(result, postgres_url=POSTGRES_URL)
    kept = [i for i, fault in enumerate(result.faults) if any(fault is f for f in shortest)]
    lines = [f"seed {result.seed} broke {len(result.violations)} invariants:"]
    lines += [f"  {violation}" for violation in result.violations[:6]]
    lines.append(f"shortest fault schedule that still fails ({len(shortest)} faults):")
    lines += [f"  {fault}" for fault in shortest]
    lines.append(f"replay: {replay_command(result, kept)}")
    return "\n".join(lines)


@pytest.mark.parametrize(("seed", "postgres"), RUNS)
async def test_a_seeded_run_keeps_every_invariant(
    seed: int, postgres: bool, simulation_tally: Any
) -> None:
    setting = default_setting(postgres)
    faults = draw_faults(seed, STEPS, setting, skip_known=True)
    result = await run_seed(seed, setting, faults, postgres_url=POSTGRES_URL, draw=SKIP_KNOWN)
    simulation_tally.add(result)
    assert result.stats["events"] > 0, "the run produced no events: it tested nothing"
    if not result.ok:
        pytest.fail(await explain(result), pytrace=False)


async def test_a_seed_replays_exactly(simulation_tally: Any) -> None:
    """The same seed and faults give the same run: every step, event and email."""
    setting = default_setting(False)
    faults = draw_faults(FIXED_SEEDS[0], 60, setting, skip_known=True)
    first = await run_seed(FIXED_SEEDS[0], setting, faults, steps=60)
    again = await run_seed(FIXED_SEEDS[0], setting, faults, steps=60)
    simulation_tally.add(first)
    assert first.struck == again.struck
    assert first.stats == again.stats
    assert [str(v) for v in first.violations] == [str(v) for v in again.violations]


async def test_it_catches_a_consumer_that_applies_out_of_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulation's own teeth: with eventkit's ordering switched off, an event whose
    handler failed once comes back from its retry behind its successor, and the run says so
    (seed 3 is one where that happens; any seed would do in a long enough run)."""
    monkeypatch.setattr(inbox.Positions, "take_turn", lambda self, event: inbox.Turn.NEXT)
    setting = default_setting(False)
    faults = [
        Fault(step, "handler_error", service)
        for step in (10, 20, 30, 40)
        for service in ("billing", "analytics")
    ]
    result = await run_seed(3, setting, faults, steps=60)
    broken = {violation.invariant for violation in result.violations}
    assert "per-aggregate order, once" in broken, result.violations
