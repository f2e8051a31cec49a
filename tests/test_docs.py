"""The generated project's documentation stays true: the README's targets table names every
documented make target, and docs/events.md is what dev_tools/catalog.py writes from the code."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BROKERS, run

# The targets `make help` lists: those with a `## what it does` comment.
DOCUMENTED_TARGET = re.compile(r"^([a-z0-9-]+):.*## ", re.MULTILINE)


def readme_section(readme: str, title: str) -> str:
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme, re.DOTALL | re.MULTILINE
    )
    assert match, f"the README has no '## {title}' section"
    return match.group(1)


def targets_in_table(section: str) -> set[str]:
    """Targets named as `make <target>` in the first column of the section's table."""
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("|")]
    return {name for cell in first_cells for name in re.findall(r"`make ([a-z0-9-]+)", cell)}


def test_every_documented_make_target_is_in_the_readme_table(baked: Path) -> None:
    documented = set(DOCUMENTED_TARGET.findall((baked / "Makefile").read_text()))
    assert {"install", "test", "catalog"} <= documented
    table = targets_in_table(readme_section((baked / "README.md").read_text(), "Make targets"))
    assert sorted(documented - table) == [], "Makefile targets missing from the README's table"
    assert sorted(table - documented) == [], "README names targets the Makefile does not have"


def test_the_event_catalog_is_the_same_for_every_broker(
    project_for: Callable[[str, bool], Path],
) -> None:
    catalogs = {b: (project_for(b, False) / "docs/events.md").read_text() for b in BROKERS}
    assert len(set(catalogs.values())) == 1, "the catalogs differ by broker"
    assert "user.events" in catalogs["kafka"]


@pytest.mark.slow
def test_the_committed_event_catalog_is_up_to_date(
    project_for: Callable[[str, bool], Path],
) -> None:
    project = project_for("kafka", True)
    run([str(project / ".venv/bin/python"), "-m", "dev_tools", "catalog", "--check"], cwd=project)
