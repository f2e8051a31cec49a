"""docs/events.md, the event catalog, matches the event registry and the services' wiring."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_event_catalog_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/catalog.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
