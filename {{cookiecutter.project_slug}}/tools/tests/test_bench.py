"""The benchmark's arithmetic (dev_tools/bench): no stack, no broker; `make bench` runs the rest."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator

import pytest

from dev_tools.bench import cpu
from dev_tools.bench.cli import phases, rates
from dev_tools.bench.fanout import per_second
from dev_tools.bench.report import client_versions, percentile, summary_ms
from dev_tools.bench.saturation import fell_behind, follow_every
from dev_tools.bench.stack import counter


def test_a_step_falls_behind_only_when_more_than_a_tenth_short() -> None:
    assert not fell_behind(100, 100)
    assert not fell_behind(100, 90.0)  # exactly 10% short still keeps up
    assert fell_behind(100, 89.9)
    assert fell_behind(25, 0)
    assert not fell_behind(100, 120)  # a backlog from before served now is not falling behind


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) == 0
    assert percentile([3.0, 1.0, 2.0], 50) == 2  # unsorted input
    assert percentile([1.0, 2.0], 50) == 1 and percentile([1.0, 2.0], 51) == 2


def test_summary_is_in_milliseconds() -> None:
    summary = summary_ms([0.010, 0.020, 0.030, 0.040])
    assert summary["count"] == 4
    assert summary["p50_ms"] == 20 and summary["p99_ms"] == 40 and summary["max_ms"] == 40
    assert summary["mean_ms"] == 25
    assert summary_ms([])["count"] == 0


def test_rates_count_the_whole_schedule() -> None:
    # 50 sign-ups at 25/s: the last leaves at 49/25 s; the schedule spans 50/25 = 2 s.
    assert per_second(50, 49 / 25, 25) == 25
    # The last answer a second late: 50 in 3 s.
    assert per_second(50, 49 / 25 + 1, 25) == pytest.approx(16.7)
    assert per_second(0, 5, 25) == 0


def test_about_follow_sign_ups_a_second_are_followed() -> None:
    assert follow_every(25, 10) == 2  # 2.5 rounds to 2 (banker's): 12.5 a second
    assert follow_every(400, 10) == 40
    assert follow_every(5, 10) == 1
    assert follow_every(100, 0) == 1


def test_command_line_rates_and_phases() -> None:
    assert rates("25,50, 100") == [25, 50, 100]
    assert phases("pipeline,saturation") == ["pipeline", "saturation"]
    for bad in ("", "25,-5", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            rates(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        phases("pipeline,http")


def test_a_counter_is_read_from_metrics_text() -> None:
    text = (
        "# TYPE eventkit_events_consumed_total counter\n"
        'eventkit_events_consumed_total{stream="user.events",type="UserCreated"} 12.0\n'
        'eventkit_events_consumed_total{stream="user.events",type="UserRenamed"} 5.0\n'
        'eventkit_events_consumed_total{stream="billing.events",type="UserCreated"} 7.0\n'
    )
    assert counter(text, "eventkit_events_consumed_total") == 12
    assert counter(text, "eventkit_events_published_total") == 0


def test_cpu_is_the_growth_of_each_process_tree() -> None:
    before = cpu.Snapshot({"user": {(10, 1.0): 2.0}, "broker": {(20, 1.0): 5.0}}, at=0)
    after = cpu.Snapshot(
        {
            "user": {(10, 1.0): 2.5, (11, 9.0): 0.25},  # a child started in between counts whole
            "broker": {(20, 7.0): 1.0},  # PID 20 reused by a new process: counted from 0
            "bench": {(1, 0.0): 0.5},
        },
        at=1,
    )
    used = cpu.used(before, after)
    assert used == {"user": 0.75, "broker": 1.0, "bench": 0.5}
    assert cpu.stack_total(used) == 1.75  # the benchmark's own CPU is not the stack's
    assert cpu.per_unit_ms(used, 250) == {"user": 3.0, "broker": 4.0, "bench": 2.0}


def test_a_step_waits_until_the_stack_is_back_near_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work a phase left behind is not counted as the next step's CPU: the step waits for
    a window at most the idle use and half of it again (at least 50 ms a second)."""

    def windows(ms_per_second: list[float]) -> Iterator[cpu.Snapshot]:
        used = 0.0
        for second, ms in enumerate(ms_per_second):
            yield cpu.Snapshot({"user": {(1, 0.0): used}}, at=second)
            used += ms / 1000
            yield cpu.Snapshot({"user": {(1, 0.0): used}}, at=second + 1)

    def looks(ms_per_second: list[float], timeout: float) -> float | None:
        feed = windows(ms_per_second)
        monkeypatch.setattr(cpu, "snapshot", lambda programs: next(feed))
        idle = {"user": 20.0}
        return asyncio.run(cpu.settle({"user": 1}, idle, timeout=timeout, window=0.001))

    assert looks([400.0, 300.0, 60.0], timeout=0.003) is not None  # 60 <= 20 + 50
    assert looks([400.0, 300.0, 80.0], timeout=0.003) is None  # still busy at the last look


def test_programs_map_to_services() -> None:
    assert cpu.service_of("billing") == "billing"
    assert cpu.service_of("billing-2") == "billing"
    assert cpu.service_of("broker") is None


def test_the_report_names_faststream_and_the_broker_client_it_runs_on() -> None:
    versions = client_versions()
    assert versions.pop("faststream")
    assert len(versions) == 1 and all(versions.values()), versions  # this bake's one broker
