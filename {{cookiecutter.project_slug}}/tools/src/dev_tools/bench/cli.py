"""The fan-out benchmark's command line: run the phases, print the table, write the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from dev_tools import ROOT
from dev_tools.bench import baseline, cpu
from dev_tools.bench.ceiling import ceiling
from dev_tools.bench.pipeline import pipeline
from dev_tools.bench.report import client_versions, plot, print_table
from dev_tools.bench.saturation import LAG_FROM, saturation
from dev_tools.bench.stack import broker_kind, not_ready

REPORTS = ROOT / "reports"
BASELINE = REPORTS / "bench-baseline.json"
PHASES = ("ceiling", "pipeline", "saturation")


def rates(text: str) -> list[float]:
    """`25,50,100`: the offered rates of the saturation steps, in sign-ups per second."""
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give rates above 0, comma-separated")
    return values


def phases(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(PHASES)}")
    return chosen


async def main_async(args: argparse.Namespace) -> int:
    programs = cpu.stack_processes()
    report: dict[str, Any] = {
        "broker": broker_kind(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(load, 2) for load in os.getloadavg()],
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "versions": client_versions(),
        "parameters": {
            "events": args.events,
            "steps": args.steps,
            "step_seconds": args.step_seconds,
            "follow": args.follow,
            "in_flight": args.in_flight,
            "poll_ms": args.poll_ms,
            "lag_from": args.lag_from,
            "timeout": args.timeout,
            "phases": args.phases,
        },
        # The processes whose CPU is measured (none when local-up did not start the stack).
        "processes": programs,
    }
    limits = httpx.Limits(max_connections=100, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        if failed := await not_ready(http):
            message = "bench: stack not ready (make local-up): " + "; ".join(failed)
            print(message, file=sys.stderr)
            return 1
        if programs:
            report["idle_cpu_ms_per_second"] = await cpu.idle(programs)
        runs: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "ceiling": lambda: ceiling(args.events, args.in_flight, args.timeout),
            "pipeline": lambda: pipeline(http, args.events, args.in_flight, args.timeout, programs),
            "saturation": lambda: saturation(
                http,
                args.steps,
                args.step_seconds,
                follow=args.follow,
                poll=args.poll_ms / 1000,
                lag_from=args.lag_from,
                timeout=args.timeout,
                programs=programs,
                idle=report.get("idle_cpu_ms_per_second", {}),
            ),
        }
        for key, run in runs.items():
            if key not in args.phases:
                continue
            print(f"bench: {key} ...", flush=True)
            try:
                report[key] = await run()
            except Exception as exc:  # the other phases' figures are still worth having
                report[key] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"bench: {key} failed: {report[key]['error']}", file=sys.stderr)
    errors = [key for key in PHASES if "error" in report.get(key, {})]
    if {"pipeline", "ceiling"} <= report.keys() - set(errors):
        report["pipeline_to_ceiling"] = round(
            report["pipeline"]["events_per_second"] / report["ceiling"]["events_per_second"], 4
        )
    report["baseline"] = baseline.comparison(report, baseline.load(BASELINE))
    REPORTS.mkdir(exist_ok=True)
    written = [REPORTS / "bench.json"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    (REPORTS / "bench.png").unlink(missing_ok=True)  # not from an earlier run
    if "saturation" in report and "saturation" not in errors:
        plot(report, REPORTS / "bench.png")
        written.append(REPORTS / "bench.png")
    print_table(report)
    baseline.print_comparison(report, str(BASELINE.relative_to(ROOT)))
    if args.accept:
        if errors:
            print(f"\nnot accepted as the baseline: {', '.join(errors)} failed", file=sys.stderr)
        else:
            accepted = baseline.accepted(report, args.command)
            BASELINE.write_text(json.dumps(accepted, indent=2) + "\n")
            written.append(BASELINE)
            print(f"\nthis run is the baseline now ({len(accepted['figures'])} figures)")
    print(f"\nwrote {', '.join(str(path.relative_to(ROOT)) for path in written)}")
    return 1 if errors or failed_below_saturation(report) else 0


def failed_below_saturation(report: dict[str, Any]) -> bool:
    """A step the stack kept up with had failed sign-ups or lost fan-outs: something broke
    (where it fell behind, requests that time out are part of the measurement)."""
    steps = report.get("saturation", {}).get("steps", [])  # none if it failed
    return any(
        step["failures"] or step["fanout_timeouts"] for step in steps if not step["fell_behind"]
    )


def command_line(argv: list[str]) -> str:
    """The make command that runs the benchmark as `argv` does, less --accept: what a
    baseline records it was measured with."""
    rest = [arg for arg in argv if arg != "--accept"]
    return "make bench" + (f" BENCH_ARGS={shlex.quote(shlex.join(rest))}" if rest else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev_tools bench",
        description="The fan-out benchmark, against the running stack (dev_tools/bench)",
    )
    parser.add_argument(
        "--events", type=int, default=10_000, help="events for the ceiling and the pipeline"
    )
    parser.add_argument(
        "--steps",
        type=rates,
        default=[25.0, 50.0, 100.0, 200.0, 400.0],
        help="offered sign-ups per second, one step each, comma-separated (25,50,100,200,400)",
    )
    parser.add_argument("--step-seconds", type=float, default=10, help="how long each step offers")
    parser.add_argument(
        "--lag-from",
        choices=LAG_FROM,
        default=LAG_FROM[0],
        help="how the saturation steps measure the fan-out lag: from the services' inboxes "
        "after each step (inbox, the default: nothing polls during a step), or by polling the "
        "read models during it (polling: what a client sees, at a cost to the services' CPU)",
    )
    parser.add_argument(
        "--follow",
        type=float,
        default=10,
        help="--lag-from polling: sign-ups a second whose fan-out lag is followed",
    )
    parser.add_argument(
        "--poll-ms", type=float, default=10, help="--lag-from polling: read-model polling interval"
    )
    parser.add_argument("--in-flight", type=int, default=100, help="publishes awaiting the broker")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="give up on a phase once nothing moved for this long (seconds), and on a "
        "sign-up's fan-out after this long",
    )
    parser.add_argument(
        "--phases",
        type=phases,
        default=list(PHASES),
        help=f"run only some, comma-separated (default: {','.join(PHASES)})",
    )
    parser.add_argument(
        "--accept",
        action="store_true",
        help=f"make this run's figures the baseline ({BASELINE.relative_to(ROOT)}) that later "
        "runs are compared with (make bench-accept)",
    )
    args = parser.parse_args(argv)
    args.command = command_line(argv)
    return asyncio.run(main_async(args))
