"""The generated README's "Add a service" walkthrough, followed as written on a fresh project.

The walkthrough marks each step with an HTML comment right before a fenced block:

    <!-- walkthrough:file PATH -->   write the block to PATH (a new file)
    <!-- walkthrough:edit PATH -->   a ```diff block: replace its `-` lines in PATH by its `+` lines
    <!-- walkthrough:run -->         run the block with bash in the project root

No broker is needed: the new service's test runs in-process, as every service's tests do.
It works on a copy of the session's installed Kafka project, virtualenv included, so the
walkthrough's `make install` only has to reinstall the project's own packages.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run

STEP = re.compile(
    r"<!-- walkthrough:(?P<kind>file|edit|run)(?: (?P<path>\S+))? -->\n"
    r"```[\w-]*\n(?P<body>.*?)^```$",
    re.DOTALL | re.MULTILINE,
)


def steps(readme: str) -> list[tuple[str, str, str]]:
    found = [(m["kind"], m["path"] or "", m["body"]) for m in STEP.finditer(readme)]
    assert len(found) == readme.count("<!-- walkthrough:"), (
        "a walkthrough marker is not followed by a fenced block"
    )
    return found


def edit(path: Path, diff: str) -> None:
    lines = diff.splitlines()
    assert all(line[:1] in "-+ " for line in lines), f"not a -/+ diff for {path.name}:\n{diff}"
    old = "\n".join(line[1:] for line in lines if line[:1] in "- ")
    new = "\n".join(line[1:] for line in lines if line[:1] in "+ ")
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} does not hold, once, the lines:\n{old}"
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_the_readme_walkthrough_adds_a_working_fifth_service(
    tmp_path: Path, project_for: Callable[[str, bool], Path]
) -> None:
    installed = project_for("kafka", True)
    project = tmp_path / installed.name
    shutil.copytree(
        installed,
        project,
        symlinks=True,
        ignore=shutil.ignore_patterns("var", "reports", ".pytest_cache", ".ruff_cache"),
    )
    walkthrough = steps((project / "README.md").read_text())
    assert {kind for kind, _, _ in walkthrough} == {"file", "edit", "run"}

    for kind, path, body in walkthrough:
        if kind == "file":
            target = project / path
            assert not target.exists(), f"the walkthrough overwrites {path}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        elif kind == "edit":
            edit(project / path, body)
        else:  # make install, the migration, the catalog, the service's tests, make lint
            run(["bash", "-euo", "pipefail", "-c", body], cwd=project, timeout=600)

    # What the steps promise: the service installed, migrated, in the catalog, deployable.
    package = project / "services/audit/src/audit_service"
    assert (package / "migrations/versions/0001_initial_schema.py").exists()
    catalog = (project / "docs/events.md").read_text()
    assert "| `user.events` | user | analytics, audit, billing, notification |" in catalog
    assert "| audit | \N{EN DASH} | `user.events` | `dlq.audit` |" in catalog
    assert "audit_service" in (project / "services/audit/Dockerfile").read_text()
    make = run(["make", "-n", "install"], cwd=project).stdout
    assert "-e services/audit" in make
