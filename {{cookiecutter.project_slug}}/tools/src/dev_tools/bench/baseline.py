"""The regression ratchet: this run's figures beside the last accepted ones.

reports/bench-baseline.json holds the figures of the run last accepted (`make
bench-accept`, or `--accept`), with the broker, the machine's CPUs and the command it was
measured with. Each figure is one that does not grow with the machine's speed alone:

- `pipeline_to_ceiling`: the pipeline's events/s over the broker's own ceiling (higher is
  better);
- `stack_cpu_ms_per_signup@<rate>`: the stack's CPU per sign-up, ms, at each offered rate
  the stack kept up with (lower is better);
- `idle_cpu_ms_per_second.<process>`: what each process of the stack uses idle, ms of CPU
  a second (lower is better).

A figure worse than its baseline by more than TOLERANCE of it is REGRESSED in the table:
a word to look into, not a failure (the command's exit says only whether the run worked).
A change smaller than the figure's FLOOR is noise, whatever its share: the CPU times
come in clock ticks of 10 ms, so three seconds of idle CPU move in steps of 3.3 ms/s.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev_tools.bench import cpu

TOLERANCE = 0.20
# Below these absolute changes a figure has not moved (its unit: ms, ms/s).
FLOOR = {"stack_cpu_ms_per_signup": 0.1, "idle_cpu_ms_per_second": 10.0}
HIGHER, LOWER = "higher", "lower"  # which way a figure is better


@dataclass(frozen=True)
class Row:
    figure: str
    now: float | None
    baseline: float | None
    better: str
    status: str  # "ok", "better", "REGRESSED", "new" (no baseline), "not measured"

    @property
    def change(self) -> float | None:
        """now / baseline - 1: +0.25 is 25 % up."""
        if self.now is None or not self.baseline:
            return None
        return self.now / self.baseline - 1


def figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ratchet's figures of a run's report: name -> {"value", "better"}."""
    found: dict[str, dict[str, Any]] = {}
    if report.get("pipeline_to_ceiling"):
        found["pipeline_to_ceiling"] = {"value": report["pipeline_to_ceiling"], "better": HIGHER}
    curve = report.get("saturation") or {}
    for step in curve.get("steps", []):
        value = step.get("stack_cpu_ms_per_signup")
        if step.get("fell_behind") or value is None:
            continue
        name = f"stack_cpu_ms_per_signup@{step['offered_per_second']:g}"
        found[name] = {"value": value, "better": LOWER}
    for process, value in sorted(report.get("idle_cpu_ms_per_second", {}).items()):
        if process != cpu.BENCH:
            found[f"idle_cpu_ms_per_second.{process}"] = {"value": value, "better": LOWER}
    return found


def floor(name: str) -> float:
    return FLOOR.get(name.split("@")[0].split(".")[0], 0.0)


def judge(name: str, now: float, baseline: float, better: str, tolerance: float = TOLERANCE) -> str:
    """ "REGRESSED" when `now` is worse than `baseline` by more than `tolerance` of it (and
    by more than the figure's floor), "better" when better by as much, else "ok"."""
    if math.isclose(now, baseline) or abs(now - baseline) <= floor(name):
        return "ok"
    worse = now < baseline if better == HIGHER else now > baseline
    if abs(now - baseline) > tolerance * abs(baseline):
        return "REGRESSED" if worse else "better"
    return "ok"


def compare(
    baseline: dict[str, Any], current: dict[str, dict[str, Any]], tolerance: float = TOLERANCE
) -> list[Row]:
    """Each figure of the baseline and of this run, side by side and judged; the baseline's
    order first, then this run's new ones."""
    accepted: dict[str, dict[str, Any]] = baseline.get("figures", {})
    rows = []
    for name, was in accepted.items():
        now = current.get(name)
        if now is None:
            rows.append(Row(name, None, was["value"], was["better"], "not measured"))
        else:
            status = judge(name, now["value"], was["value"], was["better"], tolerance)
            rows.append(Row(name, now["value"], was["value"], was["better"], status))
    for name, now in current.items():
        if name not in accepted:
            rows.append(Row(name, now["value"], None, now["better"], "new"))
    return rows


def load(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return loaded


def accepted(report: dict[str, Any], command: str) -> dict[str, Any]:
    """The baseline a run makes, when accepted: its figures, and what they were measured on."""
    machine = report["machine"]
    return {
        "broker": report["broker"],
        "accepted_at": report["timestamp"],
        "command": command,
        "cpus": machine["cpus"],
        "machine": {k: machine[k] for k in ("platform", "machine", "python") if k in machine},
        "tolerance": TOLERANCE,
        "figures": figures(report),
    }


def comparable(baseline: dict[str, Any], report: dict[str, Any]) -> str | None:
    """Why this run cannot be held to the baseline (none accepted yet, another broker), or
    None."""
    if not baseline.get("figures"):
        return "it has no figures yet: `make bench-accept` makes this run the baseline"
    if baseline.get("broker") != report["broker"]:
        return (
            f"the baseline is of a {baseline.get('broker')} stack, this is {report['broker']}: "
            "not compared (`make bench-accept` makes this run the baseline)"
        )
    return None


def print_comparison(report: dict[str, Any], path_text: str) -> None:
    """The figures beside their baseline, as comparison() left them in the report."""
    section = report.get("baseline")
    if section is None:
        print(f"\nno baseline ({path_text}): `make bench-accept` makes this run the baseline")
        return
    if section.get("not_compared"):
        print(f"\nbaseline ({path_text}): {section['not_compared']}")
        return
    where = (
        f"{path_text}, accepted {section['accepted_at']} on {section['cpus']} CPUs: "
        f"{section['command']}"
    )
    print(f"\nagainst the baseline ({where})")
    if section["cpus"] != report["machine"]["cpus"]:
        print(f"  (this machine has {report['machine']['cpus']} CPUs: expect a difference)")
    print(f"{'figure':<40} {'now':>10} {'baseline':>10} {'change':>8}")
    for row in section["rows"]:
        now = "-" if row["now"] is None else f"{row['now']:,.3g}"
        was = "-" if row["baseline"] is None else f"{row['baseline']:,.3g}"
        change = "" if row["change"] is None else f"{row['change']:+.0%}"
        flag = "" if row["status"] == "ok" else row["status"]
        print(f"{row['figure']:<40} {now:>10} {was:>10} {change:>8}  {flag}")
    regressed = sum(row["status"] == "REGRESSED" for row in section["rows"])
    print(
        f"{regressed} figure(s) REGRESSED, worse by more than {section['tolerance']:.0%}"
        if regressed
        else f"nothing worse than the baseline by more than {section['tolerance']:.0%}"
    )


def comparison(report: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's "baseline" section: what it was, and each figure judged against it."""
    if baseline is None:
        return None
    section = {
        key: baseline.get(key) for key in ("broker", "accepted_at", "command", "cpus", "tolerance")
    }
    tolerance = float(section["tolerance"] or TOLERANCE)
    section["tolerance"] = tolerance
    why_not = comparable(baseline, report)
    if why_not:
        return section | {"not_compared": why_not, "rows": []}
    rows = compare(baseline, figures(report), tolerance)
    return section | {
        "rows": [
            {
                "figure": row.figure,
                "now": row.now,
                "baseline": row.baseline,
                "better": row.better,
                "change": None if row.change is None else round(row.change, 4),
                "status": row.status,
            }
            for row in rows
        ]
    }
