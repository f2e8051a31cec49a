"""The regression ratchet (dev_tools/bench/baseline.py): figures, their judgement, the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dev_tools.bench import baseline
from dev_tools.bench.cli import command_line


def report(**changes: Any) -> dict[str, Any]:
    """A run's report, as much of it as the ratchet reads."""
    step = {"offered_per_second": 25.0, "fell_behind": False, "stack_cpu_ms_per_signup": 10.0}
    fast = {"offered_per_second": 50.0, "fell_behind": False, "stack_cpu_ms_per_signup": 8.0}
    behind = {"offered_per_second": 100.0, "fell_behind": True, "stack_cpu_ms_per_signup": 7.0}
    base = {
        "broker": "this-broker",
        "timestamp": "2026-12-06T00:00:00+00:00",
        "machine": {"cpus": 2, "platform": "Linux", "machine": "x86_64", "python": "3.12.1"},
        "pipeline_to_ceiling": 0.5,
        "saturation": {"steps": [step, fast, behind]},
        "idle_cpu_ms_per_second": {"user": 10.0, "broker": 40.0, "bench": 1.0},
    }
    return base | changes


def test_the_figures_are_ratios_cpu_per_sign_up_where_it_kept_up_and_idle_cpu() -> None:
    figures = baseline.figures(report())
    assert figures == {
        "pipeline_to_ceiling": {"value": 0.5, "better": "higher"},
        "stack_cpu_ms_per_signup@25": {"value": 10.0, "better": "lower"},
        "stack_cpu_ms_per_signup@50": {"value": 8.0, "better": "lower"},
        # the step that fell behind and the benchmark's own process are not figures
        "idle_cpu_ms_per_second.broker": {"value": 40.0, "better": "lower"},
        "idle_cpu_ms_per_second.user": {"value": 10.0, "better": "lower"},
    }
    # A phase that did not run (or failed) has no figures.
    assert baseline.figures({"broker": "this-broker", "saturation": {"error": "x"}}) == {}


def test_worse_by_more_than_a_fifth_is_regressed_either_way_a_figure_is_better() -> None:
    judge = baseline.judge
    assert judge("pipeline_to_ceiling", 0.41, 0.5, "higher") == "ok"  # 18 % down
    assert judge("pipeline_to_ceiling", 0.39, 0.5, "higher") == "REGRESSED"  # 22 % down
    assert judge("pipeline_to_ceiling", 0.61, 0.5, "higher") == "better"
    assert judge("stack_cpu_ms_per_signup@25", 11.9, 10.0, "lower") == "ok"
    assert judge("stack_cpu_ms_per_signup@25", 12.1, 10.0, "lower") == "REGRESSED"
    assert judge("stack_cpu_ms_per_signup@25", 7.9, 10.0, "lower") == "better"
    assert judge("stack_cpu_ms_per_signup@25", 10.0, 10.0, "lower") == "ok"
    # Below its floor a change is noise, however large a share of a small figure.
    assert judge("idle_cpu_ms_per_second.user", 13.3, 6.7, "lower") == "ok"  # two ticks
    assert judge("idle_cpu_ms_per_second.broker", 150.0, 110.0, "lower") == "REGRESSED"


def test_the_comparison_lists_each_figure_beside_its_baseline() -> None:
    accepted = baseline.accepted(report(), "make bench")
    now = report(
        pipeline_to_ceiling=0.3,
        saturation={
            "steps": [
                {"offered_per_second": 25.0, "fell_behind": False, "stack_cpu_ms_per_signup": 9.0},
                {"offered_per_second": 50.0, "fell_behind": True, "stack_cpu_ms_per_signup": 9.0},
                {"offered_per_second": 75.0, "fell_behind": True, "stack_cpu_ms_per_signup": 9.0},
            ]
        },
        idle_cpu_ms_per_second={"user": 10.5, "broker": 40.0, "billing": 3.0},
    )
    rows = {row.figure: row for row in baseline.compare(accepted, baseline.figures(now))}
    assert rows["pipeline_to_ceiling"].status == "REGRESSED"
    assert round(rows["pipeline_to_ceiling"].change or 0, 2) == -0.4
    assert rows["stack_cpu_ms_per_signup@25"].status == "ok"
    assert rows["stack_cpu_ms_per_signup@50"].status == "not measured"  # it fell behind now
    assert rows["idle_cpu_ms_per_second.user"].status == "ok"
    assert rows["idle_cpu_ms_per_second.billing"].status == "new"
    section = baseline.comparison(now, accepted)
    assert section is not None and section["cpus"] == 2
    statuses = {row["figure"]: row["status"] for row in section["rows"]}
    assert statuses["pipeline_to_ceiling"] == "REGRESSED"


def test_another_brokers_baseline_is_not_compared(capsys: Any) -> None:
    accepted = baseline.accepted(report(broker="another-broker"), "make bench")
    now = report()
    section = baseline.comparison(now, accepted)
    assert section is not None and section["rows"] == []
    assert "another-broker" in section["not_compared"]
    now["baseline"] = section
    baseline.print_comparison(now, "reports/bench-baseline.json")
    assert "not compared" in capsys.readouterr().out
    assert baseline.comparison(now, None) is None
    empty = {"broker": "this-broker", "figures": {}}
    assert "no figures yet" in (baseline.comparison(now, empty) or {})["not_compared"]


def test_the_table_flags_a_regression_with_a_word(capsys: Any) -> None:
    now = report(pipeline_to_ceiling=0.2)
    now["baseline"] = baseline.comparison(now, baseline.accepted(report(), "make bench"))
    baseline.print_comparison(now, "reports/bench-baseline.json")
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("pipeline_to_ceiling")]
    assert line.split()[1:] == ["0.2", "0.5", "-60%", "REGRESSED"]
    assert "1 figure(s) REGRESSED" in out


def test_an_accepted_baseline_records_what_it_was_measured_with(tmp_path: Path) -> None:
    accepted = baseline.accepted(report(), command_line(["--events", "2000", "--accept"]))
    assert accepted["command"] == "make bench BENCH_ARGS='--events 2000'"
    assert accepted["cpus"] == 2 and accepted["broker"] == "this-broker"
    path = tmp_path / "bench-baseline.json"
    path.write_text(json.dumps(accepted))
    assert baseline.load(path) == accepted
    assert baseline.load(tmp_path / "none.json") is None
    assert command_line(["--accept"]) == "make bench"


def test_the_shipped_baseline_is_one_the_ratchet_reads() -> None:
    from dev_tools.bench.cli import BASELINE

    shipped = baseline.load(BASELINE)
    if shipped is None or not shipped["figures"]:  # removed, or none for this broker yet
        return
    assert shipped["cpus"] >= 1 and shipped["command"].startswith("make bench")
    for name, figure in shipped["figures"].items():
        assert figure["better"] in ("higher", "lower"), name
        assert figure["value"] > 0, name
