"""The figures: percentiles, the versions, the table and the saturation curve's plot."""

from __future__ import annotations

import importlib.metadata
import math
import statistics
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`: the smallest value that at least
    q% of them do not exceed; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) / 100 - 1e-9)  # q * n / 100 is exact for whole q
    return ordered[max(1, min(len(ordered), rank)) - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms, default=0.0), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else 0.0,
    }


def client_versions() -> dict[str, str]:
    """FastStream and the broker's client, as installed: the client the ceiling phase
    measures (`CLIENT` of ceiling_<broker>.py, the one the adapter runs on), with the
    packages it runs on (its `RUNS_ON`) beside its version: `3.10.0 (its base 1.43.117)`."""
    from dev_tools.bench.ceiling import broker_module

    broker = importlib.import_module(broker_module())
    client: str = broker.CLIENT
    version = importlib.metadata.version(client)
    runs_on: tuple[str, ...] = getattr(broker, "RUNS_ON", ())
    bases = [f"{base} {importlib.metadata.version(base)}" for base in runs_on]
    return {
        "faststream": importlib.metadata.version("faststream"),
        client: f"{version} ({', '.join(bases)})" if bases else version,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """The saturation curve: latencies against the offered rate (log scales), and below it
    the rate served against the rate offered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    curve = report["saturation"]
    steps = curve["steps"]
    offered = [step["offered_per_second"] for step in steps]
    figure, (lags, served) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 7), gridspec_kw={"height_ratios": [3, 2]}
    )
    lines = (
        ("fanout_lag", "p99_ms", "fan-out lag p99", "#c44e52", "-"),
        ("fanout_lag", "p50_ms", "fan-out lag p50", "#4c72b0", "-"),
        ("latency", "p99_ms", "POST /users p99", "#c44e52", "--"),
        ("latency", "p50_ms", "POST /users p50", "#4c72b0", "--"),
    )
    for key, quantile, label, color, style in lines:
        points = [(x, step[key][quantile]) for x, step in zip(offered, steps, strict=True)]
        points = [(x, y) for x, y in points if y > 0]  # nothing to draw on a log scale
        if points:
            xs, ys = zip(*points, strict=True)
            lags.plot(xs, ys, style, marker="o", color=color, label=label)
    lags.set_yscale("log")
    lags.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    lags.set_ylabel("ms (log scale)")
    lags.grid(True, which="both", alpha=0.3)
    lags.legend()
    lags.set_title(
        f"{report['broker']}: sign-ups offered for {curve['step_seconds']:g} s a step, "
        f"{report['machine']['cpus']} CPUs"
    )
    served.plot(offered, offered, ":", color="grey", label="served = offered")
    served.plot(
        offered,
        [step["served_per_second"] for step in steps],
        marker="o",
        color="#55a868",
        label="served",
    )
    behind = [step for step in steps if step["fell_behind"]]
    if behind:
        served.scatter(
            [step["offered_per_second"] for step in behind],
            [step["served_per_second"] for step in behind],
            s=120,
            facecolors="none",
            edgecolors="#c44e52",
            label=f"fell behind (> {curve['tolerance']:.0%} short)",
            zorder=3,
        )
    served.set_ylim(bottom=0)
    served.set_ylabel("sign-ups served per second")
    served.set_xlabel("sign-ups offered per second (log scale)")
    served.set_xscale("log")
    served.set_xticks(offered, [f"{x:g}" for x in offered])
    served.minorticks_off()
    served.grid(True, alpha=0.3)
    served.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms" if value >= 1 else f"{value:.2f} ms"


def cpu_line(per_unit: dict[str, float]) -> str:
    """Milliseconds of CPU by program, the heaviest first; the benchmark's own last."""
    programs = sorted(
        ((name, value) for name, value in per_unit.items() if name != "bench"),
        key=lambda item: -item[1],
    )
    text = ", ".join(f"{name} {value:,.2f}" for name, value in programs)
    return f"{text} (the benchmark itself {per_unit.get('bench', 0):,.2f})"


def print_table(report: dict[str, Any]) -> None:
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    load = " / ".join(f"{x:g}" for x in machine["load_average"])
    print(
        f"\n{report['broker']}: {machine['cpus']} CPUs (load average {load} at the start), "
        f"Python {machine['python']}, {versions}"
    )
    if not report["processes"]:
        print("CPU not measured: the stack was not started by `make local-up`")
    elif "broker" not in report["processes"]:
        print("the broker's CPU is not counted: `make local-up` did not start it")
    for key in ("ceiling", "pipeline", "saturation"):
        if "error" in report.get(key, {}):
            print(f"{key} failed: {report[key]['error']}")
    rows: list[tuple[str, str, str]] = []
    raw, pipe, curve = (
        None if "error" in report.get(key, {}) else report.get(key)
        for key in ("ceiling", "pipeline", "saturation")
    )
    if raw:
        consumer_cpu = max(raw["consumer_cpu_ms_per_event"])
        rows.append(
            (
                f"ceiling ({raw['client']})",
                f"{raw['events_per_second']:,.0f} events/s",
                f"{raw['events']:,} events to {raw['consumers']} no-op consumers; publishing "
                f"{raw['publish_events_per_second']:,.0f}/s; a consumer's CPU "
                f"{consumer_cpu:.3f} ms/event",
            )
        )
    if pipe:
        ratio = report.get("pipeline_to_ceiling")
        consumers = ", ".join(
            f"{k} {v:,.0f}/s" for k, v in pipe["per_consumer_events_per_second"].items()
        )
        rows.append(
            (
                "pipeline",
                f"{pipe['events_per_second']:,.0f} events/s",
                (f"{ratio:.3f} of the ceiling; " if ratio else "") + consumers,
            )
        )
        if pipe["stack_cpu_ms_per_event"] is not None:
            rows.append(
                (
                    "  CPU per event",
                    ms(pipe["stack_cpu_ms_per_event"]),
                    cpu_line(pipe["cpu_ms_per_event"]),
                )
            )
    for name, value, note in rows:
        print(f"{name:<22} {value:<18} {note}")
    if curve:
        print_curve(curve, report.get("idle_cpu_ms_per_second", {}))


LAG_FROM = {
    "inbox": "fan-out lag from the services' inboxes, read after each step",
    "polling": "fan-out lag polled from the read models during each step",
}


def print_curve(curve: dict[str, Any], idle: dict[str, float]) -> None:
    how = LAG_FROM.get(curve.get("lag_from", "polling"), "")
    print(f"\nsaturation: POST /users at stepped rates, {curve['step_seconds']:g} s each; {how}")
    header = (
        "offered/s",
        "served/s",
        "request p50",
        "p99",
        "fan-out lag p50",
        "p99",
        "CPU/sign-up",
        "bench CPU",
    )
    print("{:>9} {:>9} {:>12} {:>11} {:>16} {:>11} {:>12} {:>10}".format(*header))
    for step in curve["steps"]:
        notes = []
        if step["fell_behind"]:
            notes.append("fell behind")
        if step["sent_per_second"] < 0.95 * step["offered_per_second"]:
            notes.append(f"the benchmark sent only {step['sent_per_second']:g}/s")
        if step["failures"] or step["fanout_timeouts"]:
            notes.append(f"{step['failures']} failed, {step['fanout_timeouts']} lags timed out")
        print(
            f"{step['offered_per_second']:>9g} {step['served_per_second']:>9g} "
            f"{ms(step['latency']['p50_ms']):>12} {ms(step['latency']['p99_ms']):>11} "
            f"{ms(step['fanout_lag']['p50_ms']):>16} {ms(step['fanout_lag']['p99_ms']):>11} "
            f"{ms(step['stack_cpu_ms_per_signup']):>12} "
            f"{ms(step.get('bench_cpu_ms_per_signup')):>10}  {'; '.join(notes)}"
        )
    sustained, behind = curve["sustained_per_second"], curve["fell_behind_at"]
    print(
        f"served in full up to {sustained:g} sign-ups/s" if sustained else "no step served in full",
        f"; fell behind at {behind:g}/s" if behind else "; never fell behind",
        sep="",
    )
    # The CPU of the fastest step served in full (or of the first step, if none was).
    kept_up = [step for step in curve["steps"] if not step["fell_behind"]]
    step = kept_up[-1] if kept_up else curve["steps"][0]
    if step["stack_cpu_ms_per_signup"] is not None:
        print(
            f"CPU per sign-up at {step['offered_per_second']:g}/s: "
            f"{ms(step['stack_cpu_ms_per_signup'])} for the stack, "
            f"{ms(step['stack_cpu_ms_per_signup_above_idle'])} above its idle use; by process: "
            + cpu_line(step["cpu_ms_per_signup"])
        )
    if idle:
        print("idle, CPU ms per second: " + cpu_line(idle))
