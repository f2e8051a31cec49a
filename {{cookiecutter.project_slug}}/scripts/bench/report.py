"""The figures: percentiles, the table, reports/bench.json and the lag histogram."""

from __future__ import annotations

import importlib.metadata
import re
import statistics
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


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
    """FastStream and the broker client it runs on, as installed."""
    versions = {"faststream": importlib.metadata.version("faststream")}
    requires = importlib.metadata.requires("eventkit") or []
    extras = {
        extra
        for requirement in requires
        if requirement.startswith("faststream[")
        for extra in requirement.split("[", 1)[1].split("]", 1)[0].split(",")
    }
    for requirement in importlib.metadata.requires("faststream") or []:
        match = re.match(r"([A-Za-z0-9_.-]+).*extra == ['\"](\w+)['\"]", requirement)
        if match and match.group(2) in extras:
            name = match.group(1)
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def plot(http: dict[str, Any], broker_kind: str, path: Path) -> None:
    """A histogram of the fan-out lags, with their percentiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lags = http["lags_ms"]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    if lags:
        axis.hist(lags, bins=min(60, max(10, len(lags) // 5)), color="#4c72b0")
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            value = http["fanout_lag"][f"{q}_ms"]
            axis.axvline(value, color="#c44e52", linestyle=style, label=f"{q} {value:.1f} ms")
        axis.legend()
    models = len(http["fanout_lag_by_read_model"])
    axis.set_xlabel(f"fan-out lag: from the 201 to visible in all {models} read models (ms)")
    axis.set_ylabel("sign-ups")
    axis.set_title(
        f"{broker_kind}: {http['rate']:g} sign-ups/s for {http['seconds']:g} s, "
        f"lag of every {http['fanout_sample_every']}th: {len(lags)}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def percentiles(summary: dict[str, float]) -> str:
    return "p50 {p50_ms:.1f} / p95 {p95_ms:.1f} / p99 {p99_ms:.1f} ms".format(**summary)


def print_table(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    raw, pipe, http = (report.get(key) for key in ("broker_baseline", "pipeline", "http"))
    if raw:
        rows.append(
            (
                "broker baseline",
                f"{raw['events_per_second']:,.0f} events/s",
                f"{raw['events']} events; publishing alone "
                f"{raw['publish_events_per_second']:,.0f}/s",
            )
        )
    if pipe:
        ratio = report.get("pipeline_to_baseline")
        consumers = ", ".join(
            f"{k} {v:,.0f}/s" for k, v in pipe["per_consumer_events_per_second"].items()
        )
        rows.append(
            (
                "pipeline",
                f"{pipe['events_per_second']:,.0f} events/s",
                (f"{ratio:.2f} of the baseline; " if ratio else "") + consumers,
            )
        )
    if http:
        rows.append(
            (
                "POST /users latency",
                percentiles(http["latency"]),
                f"{http['achieved_rate']:g}/s of {http['rate']:g}/s asked, "
                f"{http['failures']} failed",
            )
        )
        rows.append(
            (
                "fan-out lag",
                percentiles(http["fanout_lag"]),
                f"{http['fanout_lag']['count']} sign-ups followed, "
                f"{http['fanout_timeouts']} timed out",
            )
        )
        rows += [
            (f"  in {name}", percentiles(summary), "")
            for name, summary in http["fanout_lag_by_read_model"].items()
        ]
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    print(f"\n{report['broker']}: {machine['cpus']} CPUs, Python {machine['python']}, {versions}")
    for name, value, note in rows:
        print(f"{name:<20} {value:<40} {note}")
