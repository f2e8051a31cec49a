"""The short run's report: the new seeds it drew, and what its faults covered."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.simulation.engine import RunResult
from tests.simulation.faults import KINDS, KNOWN_FAULTS
from tests.simulation.seeds import session_new_seeds


class Tally:
    """What the simulation's tests ran, for the summary at the end of `make test`."""

    def __init__(self) -> None:
        self.runs = 0
        self.struck: Counter[str] = Counter()

    def add(self, result: RunResult) -> None:
        self.runs += 1
        self.struck += result.struck


TALLY = Tally()


@pytest.fixture(scope="session")
def simulation_tally() -> Tally:
    return TALLY


def pytest_report_header() -> str:
    seeds = ", ".join(map(str, session_new_seeds()))
    replay = 'make simulate SEED=<seed> ARGS="--known skip"'
    return f"simulation: new seeds this run: {seeds} (replay one: {replay})"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY.runs:
        return
    boundaries = {KINDS[kind].boundary for kind in TALLY.struck}
    every = {kind.boundary for kind in KINDS.values()}
    terminalreporter.write_line(
        f"simulation: {TALLY.runs} runs; fault kinds that struck: {len(TALLY.struck)} of "
        f"{len(KINDS)} ({len(KNOWN_FAULTS)} known to fail, left out); boundaries: "
        f"{len(boundaries)} of {len(every)}"
    )
    terminalreporter.write_line(
        "  " + ", ".join(f"{kind} {count}" for kind, count in sorted(TALLY.struck.items()))
    )
