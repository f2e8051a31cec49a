"""The fan-out benchmark's command line: run the phases, print the table, write the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from scripts.bench.baseline import raw_broker
from scripts.bench.fanout import http_fanout
from scripts.bench.pipeline import pipeline
from scripts.bench.report import client_versions, plot, print_table
from scripts.bench.stack import ROOT, broker_kind, not_ready

REPORTS = ROOT / "reports"
PHASES = ("broker_baseline", "pipeline", "http")


async def main_async(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {
        "broker": broker_kind(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "versions": client_versions(),
        "parameters": {
            "events": args.events,
            "rate": args.rate,
            "seconds": args.seconds,
            "in_flight": args.in_flight,
            "poll_ms": args.poll_ms,
            "sample": args.sample,
            "timeout": args.timeout,
        },
    }
    # Idle connections are dropped before uvicorn's 5 s keep-alive would close them.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        if failed := await not_ready(http):
            message = "bench: stack not ready (make local-up): " + "; ".join(failed)
            print(message, file=sys.stderr)
            return 1
        steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("broker_baseline", lambda: raw_broker(args.events, args.in_flight, args.timeout)),
            ("pipeline", lambda: pipeline(http, args.events, args.in_flight, args.timeout)),
            (
                "http",
                lambda: http_fanout(
                    http,
                    args.rate,
                    args.seconds,
                    sample=args.sample,
                    poll=args.poll_ms / 1000,
                    timeout=args.timeout,
                ),
            ),
        ]
        for key, step in steps:
            if key not in args.phases:
                continue
            print(f"bench: {key} ...", flush=True)
            report[key] = await step()
    if "pipeline" in report and "broker_baseline" in report:
        report["pipeline_to_baseline"] = round(
            report["pipeline"]["events_per_second"]
            / report["broker_baseline"]["events_per_second"],
            3,
        )
    REPORTS.mkdir(exist_ok=True)
    written = [REPORTS / "bench.json"]
    if "http" in report:
        plot(report["http"], report["broker"], REPORTS / "bench-lag.png")
        written.append(REPORTS / "bench-lag.png")
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {' and '.join(str(path.relative_to(ROOT)) for path in written)}")
    http = report.get("http", {})
    return 1 if http.get("failures") or http.get("fanout_timeouts") else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description="The fan-out benchmark, against the running stack (scripts/bench/__init__.py)",
    )
    parser.add_argument("--events", type=int, default=2000, help="events for (1) and (2)")
    parser.add_argument("--rate", type=float, default=100, help="sign-ups per second in (3)")
    parser.add_argument("--seconds", type=float, default=10, help="how long (3) runs")
    parser.add_argument("--poll-ms", type=float, default=10, help="read-model polling interval")
    parser.add_argument("--sample", type=int, default=4, help="follow every Nth sign-up's fan-out")
    parser.add_argument("--in-flight", type=int, default=100, help="publishes awaiting the broker")
    parser.add_argument("--timeout", type=float, default=60, help="give up on a phase after")
    parser.add_argument(
        "--phases",
        type=lambda text: [p.strip() for p in text.split(",")],
        default=list(PHASES),
        help=f"run only some, comma-separated (default: {','.join(PHASES)})",
    )
    return asyncio.run(main_async(parser.parse_args()))
