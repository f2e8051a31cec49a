"""Hold each event type's JSON Schema to its committed snapshot.

    python -m dev_tools schema-check           exit 1 with a line per incompatible change (else
                                             one line saying all fit)
    python -m dev_tools schema-check --write   refresh the snapshot (make catalog does this)

An incompatible change (a field removed or retyped, an optional field made required, a
new required field) needs a new version of the event and an upcaster from the old one,
in libs/contracts/src/contracts/events.py. `make test` runs this check.
"""

from __future__ import annotations

import json
import sys

from contracts import EVENTS
from dev_tools import ROOT
from eventkit.schemas import Snapshot, problems, refreshed

SNAPSHOT = ROOT / "libs" / "contracts" / "event-schemas.json"


def load() -> Snapshot:
    return json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}


def write() -> None:
    SNAPSHOT.write_text(json.dumps(refreshed(EVENTS, load()), indent=2) + "\n")


def check() -> list[str]:
    return problems(EVENTS, load())


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        write()
        print("wrote libs/contracts/event-schemas.json")
        return 0
    found = check()
    for line in found:
        print(f"schema-check: {line}", file=sys.stderr)
    if not found:  # a check that passes in silence looks like one that did not run
        print(f"schema-check: the {len(load())} event types fit {SNAPSHOT.name}, nothing to do")
    return 1 if found else 0
