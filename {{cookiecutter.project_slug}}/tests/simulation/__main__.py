"""`make simulate`: run seeds of the pipeline simulation; shrink and print what fails.

    python -m tests.simulation                    # 20 new seeds
    python -m tests.simulation --runs 500         # 500 new seeds
    python -m tests.simulation --seed 42          # replay seed 42 (with all its faults)
    python -m tests.simulation --seed 42 --faults 1,3   # replay it with two of its faults
    python -m tests.simulation --runs 100000 --minutes 60   # a long run: an hour per database

Each seed runs on SQLite, and on PostgreSQL too when TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter

from .engine import INVARIANTS, STEPS, RunResult, replay_command, run_seed, shrink
from .faults import KINDS, KNOWN_FAULTS, Fault, Setting, draw_faults
from .seeds import default_setting, new_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, help="run this seed (and the next RUNS-1)")
    parser.add_argument("--runs", type=int, help="how many seeds (default: 1 with --seed, else 20)")
    parser.add_argument("--faults", help="keep only these of the seed's faults: 0,2,5 (indexes)")
    parser.add_argument("--only", help="draw faults of these kinds only: rebuild,db_outage")
    parser.add_argument(
        "--known",
        choices=["include", "skip"],
        default="include",
        help="inject the kinds KNOWN_FAULTS lists (default) or leave them out",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres", "both"],
        help="default: both when TEST_POSTGRES_URL is set, else sqlite",
    )
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--minutes", type=float, help="start no new seed after this long, on each database"
    )
    parser.add_argument("--no-shrink", action="store_true", help="print failures unshrunk")
    args = parser.parse_args(argv)
    postgres_url = os.environ.get("TEST_POSTGRES_URL")
    database = args.database or ("both" if postgres_url else "sqlite")
    if database != "sqlite" and not postgres_url:
        parser.error("--database postgres needs TEST_POSTGRES_URL")
    runs = args.runs or (1 if args.seed is not None else 20)
    seeds = list(range(args.seed, args.seed + runs)) if args.seed is not None else new_seeds(runs)
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - set(KINDS)
    if unknown:
        parser.error(f"no fault kind {', '.join(sorted(unknown))}; kinds: {', '.join(KINDS)}")
    databases = {"sqlite": [False], "postgres": [True], "both": [False, True]}[database]
    return asyncio.run(simulate(seeds, databases, args, only, postgres_url))


async def simulate(
    seeds: list[int],
    databases: list[bool],
    args: argparse.Namespace,
    only: set[str] | None,
    postgres_url: str | None,
) -> int:
    struck: Counter[str] = Counter()
    failed = 0
    total = 0
    for postgres in databases:
        setting = default_setting(postgres)
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        for seed in seeds:
            if deadline is not None and time.monotonic() > deadline:
                break
            faults = draw_faults(
                seed, args.steps, setting, skip_known=args.known == "skip", only=only
            )
            if args.faults is not None:  # "-": none of them
                keep = {int(i) for i in args.faults.split(",") if i.strip().isdigit()}
                faults = [f for i, f in enumerate(faults) if i in keep]
            result = await run_seed(
                seed,
                setting,
                faults,
                postgres_url=postgres_url,
                steps=args.steps,
                draw=draw_options(args),
            )
            total += 1
            struck += result.struck
            report(result)
            if result.ok:
                continue
            failed += 1
            if not args.no_shrink and result.faults:
                shortest = await shrink(result, postgres_url=postgres_url, steps=args.steps)
                print_shrunk(result, shortest)
    print(f"\n{total - failed} of {total} runs kept every invariant ({len(INVARIANTS)} checked).")
    print(coverage(struck))
    return 1 if failed else 0


def draw_options(args: argparse.Namespace) -> tuple[str, ...]:
    """The options that decide a seed's fault list, to replay it with the same one."""
    options = []
    if args.known == "skip":
        options.append("--known skip")
    if args.only:
        options.append(f"--only {args.only}")
    if args.steps != STEPS:
        options.append(f"--steps {args.steps}")
    return tuple(options)


def where(setting: Setting) -> str:
    return f"{setting.broker}, {'PostgreSQL' if setting.postgres else 'SQLite'}"


def report(result: RunResult) -> None:
    verdict = "ok" if result.ok else "FAILED"
    print(
        f"seed {result.seed} ({where(result.setting)}): {verdict} in {result.seconds:.1f}s, "
        f"{result.stats['events']} events, {len(result.faults)} faults"
    )
    if result.ok:
        return
    for index, fault in enumerate(result.faults):
        known = f"  (known: {KNOWN_FAULTS[fault.known_as]})" if fault.known_as else ""
        print(f"    fault {index}: {fault}{known}")
    for violation in result.violations[:8]:
        print(f"    broke {violation}")
    if len(result.violations) > 8:
        print(f"    ... and {len(result.violations) - 8} more")


def print_shrunk(result: RunResult, shortest: list[Fault]) -> None:
    indexes = [i for i, f in enumerate(result.faults) if any(f is g for g in shortest)]
    print(f"  shortest schedule that still fails ({len(shortest)} of {len(result.faults)} faults):")
    for fault in shortest:
        print(f"    {fault}")
    print(f"  replay: {replay_command(result, indexes)}")
    print(f"  (the whole run: {replay_command(result)})")


def coverage(struck: Counter[str]) -> str:
    boundaries = sorted({KINDS[kind].boundary for kind in struck})
    all_boundaries = sorted({kind.boundary for kind in KINDS.values()})
    lines = [
        f"fault kinds that struck: {len(struck)} of {len(KINDS)}; "
        f"boundaries: {len(boundaries)} of {len(all_boundaries)}"
    ]
    lines += [f"  {kind}: {count}" for kind, count in sorted(struck.items())]
    missing = sorted(set(KINDS) - set(struck))
    if missing:
        lines.append(f"  not struck: {', '.join(missing)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
