"""docs/events.md, the event catalog, and the README's diagram match the event registry and
the services' wiring (`make catalog` writes both)."""

import subprocess
import sys

from contracts import ROSTER
from dev_tools import ROOT
from dev_tools.catalog import DIAGRAM_BEGIN, README, diagram, readme_with_diagram


def test_the_event_catalog_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dev_tools", "catalog", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_the_readme_shows_the_current_diagram_of_services_and_streams() -> None:
    readme = README.read_text()
    assert DIAGRAM_BEGIN in readme, "README.md lost the diagram's markers"
    assert readme_with_diagram(readme) == readme, "README's diagram is stale: make catalog"
    drawn = "\n".join(diagram())
    assert all(f'["{spec.name} :{spec.port}"]' in drawn for spec in ROSTER.services)
    assert all(f'(["{stream}"])' in drawn for stream in ROSTER.streams)
    # An arrow from each stream's producer, and one to each of its subscribers.
    subscriptions = sum(len(ROSTER.subscribers(stream)) for stream in ROSTER.streams)
    assert drawn.count("-->") == len(ROSTER.streams) + subscriptions
