"""Keeping a generated project up to date with cruft, as the README says.

cruft works from a git repository of the template, so each test clones this repository's
HEAD into a temporary directory (what CI checks out, too): commits made there to play a
template change touch nothing here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_env, run

# Commits in the temporary repositories need an identity; the machine may have none.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "template tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "template tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
}


def cruft() -> str:
    path = Path(sys.executable).parent / "cruft"
    if not path.exists():
        pytest.fail("cruft is missing: install requirements-dev.txt (make test does)")
    return str(path)


@pytest.fixture
def template(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is not installed; cruft needs it")
    clone = tmp_path / "template"
    run(["git", "clone", "--quiet", str(TEMPLATE), str(clone)], cwd=tmp_path)
    return clone


def create(template: Path, out: Path, **answers: str) -> Path:
    run(
        [
            cruft(),
            "create",
            str(template),
            "--no-input",
            "--output-dir",
            str(out),
            "--extra-context",
            json.dumps(answers),
        ],
        cwd=out,
    )
    return out / answers["project_slug"]


def head(repo: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()


def test_cruft_create_links_the_project_and_check_passes(template: Path, tmp_path: Path) -> None:
    project = create(template, tmp_path, broker="rabbitmq", project_slug="linked")
    link = json.loads((project / ".cruft.json").read_text())
    assert link["template"] == str(template)
    assert link["commit"] == head(template)
    assert link["context"]["cookiecutter"]["broker"] == "rabbitmq"
    assert not (project / "libs/eventkit/src/eventkit/broker_kafka.py").exists()
    run([cruft(), "check"], cwd=project)
    run([cruft(), "diff", "--exit-code"], cwd=project)  # as generated, nothing differs


def test_cruft_update_brings_a_template_change_into_the_project(
    template: Path, tmp_path: Path
) -> None:
    project = create(template, tmp_path, broker="kafka", project_slug="kept")
    for args in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "baked"]):
        run(["git", *args], cwd=project, env=GIT_IDENTITY)

    readme = template / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text() + "\nA line the template gained later.\n")
    run(["git", "commit", "--quiet", "--all", "-m", "later"], cwd=template, env=GIT_IDENTITY)

    stale = subprocess.run(
        [cruft(), "check"], cwd=project, env=clean_env(), capture_output=True, text=True
    )
    assert stale.returncode != 0
    assert "out of date" in stale.stdout + stale.stderr
    run([cruft(), "update", "--skip-apply-ask"], cwd=project, env=GIT_IDENTITY)
    assert (project / "README.md").read_text().endswith("A line the template gained later.\n")
    assert json.loads((project / ".cruft.json").read_text())["commit"] == head(template)
    run([cruft(), "check"], cwd=project)
