"""The generated README as a newcomer follows it: each step it shows does what it says.

Each test takes a section's own words (a snippet, a command) from the README of a fresh
bake and does what a newcomer would with them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import bake, broker_of, clean_env, local_stack_env, run, wait_for


def readme(project: Path) -> str:
    return (project / "README.md").read_text()


def test_a_fresh_bake_is_a_git_repository_with_nothing_committed(tmp_path: Path) -> None:
    """So `pre-commit install` and cruft work as the README says; the first commit is the
    user's."""
    assert bake(tmp_path, broker="rabbitmq", project_slug="fresh").returncode == 0
    project = tmp_path / "fresh"
    assert (project / ".git").is_dir()
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True).returncode
    untracked = run(["git", "status", "--porcelain"], cwd=project).stdout
    assert "?? README.md" in untracked and "?? .venv" not in untracked


def test_a_bake_inside_a_repository_is_not_a_repository_of_its_own(tmp_path: Path) -> None:
    run(["git", "init", "--quiet"], cwd=tmp_path)
    assert bake(tmp_path, broker="kafka", project_slug="nested").returncode == 0
    assert not (tmp_path / "nested/.git").exists()


def test_pre_commit_install_works_in_the_installed_bake(installed: Path) -> None:
    assert ".venv/bin/pre-commit install" in readme(installed)
    run([".venv/bin/pre-commit", "install"], cwd=installed)
    assert (installed / ".git/hooks/pre-commit").exists()


def the_smallest_handler(project: Path) -> tuple[Path, str]:
    """The README's smallest handler and the file it says to add it to."""
    text = readme(project)
    section = text[text.index("The smallest handler") :]
    where = re.search(r"`(services/[^`]+/handlers\.py)`", section)
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert where and snippet, "the README's smallest handler names no file, or has no code"
    return project / where.group(1), snippet.group(1)


@pytest.fixture
def restored() -> Iterator[Callable[[Path], Path]]:
    """Hands out files of the shared installed bake to change; puts each back afterwards."""
    saved: dict[Path, str] = {}

    def keep(path: Path) -> Path:
        saved.setdefault(path, path.read_text())
        return path

    yield keep
    for path, text in saved.items():
        path.write_text(text)


def test_the_smallest_handler_added_where_the_readme_says_joins_the_service(
    installed: Path, restored: Callable[[Path], Path]
) -> None:
    handlers, snippet = the_smallest_handler(installed)
    restored(handlers).write_text(handlers.read_text() + "\n\n" + snippet)
    py = str(installed / ".venv/bin/python")
    run([py, "-m", "mypy", "--strict", str(handlers)], cwd=installed)
    run([py, "-m", "ruff", "check", str(handlers)], cwd=installed)
    run([py, "-m", "ruff", "format", "--check", str(handlers)], cwd=installed)
    module = f"{handlers.parent.name}.handlers"
    code = f"from {module} import subscriptions as s\nfor x in s.subscriptions: print(x.handler)"
    names = re.findall(r"function (\w+)", run([py, "-c", code], cwd=installed).stdout)
    assert names[-1] == "greet" and len(names) > 1, names  # the service's own handlers stay


def test_a_second_subscriptions_in_a_service_stops_its_import_saying_why(
    installed: Path, restored: Callable[[Path], Path]
) -> None:
    """What the newcomer pasted first: a module of its own replacing the service's."""
    handlers, snippet = the_smallest_handler(installed)
    pasted = "\nsubscriptions = Subscriptions()\n\n\n" + snippet
    restored(handlers).write_text(handlers.read_text() + pasted)
    module = f"{handlers.parent.name}.handlers"
    result = subprocess.run(
        [str(installed / ".venv/bin/python"), "-c", f"import {module}"],
        cwd=installed,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert f"{module} has its Subscriptions already (`subscriptions`)" in result.stderr


LOCAL_BROKER_URLS = {
    "kafka": "localhost:9092",
    "rabbitmq": "amqp://guest:guest@localhost:5672/",
    "sqs": "http://localhost:4566",
}


def test_the_settings_table_gives_the_broker_url_of_this_bakes_broker_alone(
    baked: Path,
) -> None:
    """The README links the table: docs/settings.md."""
    assert "[docs/settings.md](docs/settings.md)" in readme(baked)
    table = (baked / "docs/settings.md").read_text()
    (line,) = [x for x in table.splitlines() if x.startswith("| `BROKER_URL` |")]
    broker = broker_of(baked)
    for other, url in LOCAL_BROKER_URLS.items():
        assert (url in line) == (other == broker), line


def make(project: Path, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_local_status_with_nothing_running_says_so_and_succeeds(installed: Path) -> None:
    result = make(installed, "local-status")
    assert result.returncode == 0, result.stderr
    assert "not running" in result.stdout and "Error" not in result.stderr


def test_schema_check_says_in_one_line_that_all_is_well(installed: Path) -> None:
    result = make(installed, "schema-check")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if line.startswith("schema-check:")]
    assert len(said) == 1 and "fit" in said[0], result.stdout


def test_the_pipeline_figure_is_stated_once_beside_how_it_was_measured(baked: Path) -> None:
    """The figures are in docs/broker.md; the README says how they were measured and
    links them."""
    figures = (baked / "docs/broker.md").read_text()
    row = re.compile(r"^\| (ceiling|pipeline)[^|]* \| ([\d,.]+) events/s", re.M)
    table = dict(m.groups() for m in row.finditer(figures))
    assert set(table) == {"ceiling", "pipeline"}, table
    stated = re.findall(r"([\d,.]+) events/s", readme(baked) + figures)
    assert sorted(stated) == sorted(table.values())
    # Where they came from: the README's paragraph that links them.
    text = readme(baked)
    how = text[text.index("Measured here") :]
    how = how[: how.index("\n\n")]
    assert "make bench" in how and "(docs/broker.md#benchmark)" in how, how


RABBIT_HOST_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672")


@pytest.fixture
def stack(installed: Path) -> Iterator[dict[str, str]]:
    """`MAX_RETRIES=3 RETRY_DELAYS_SECONDS=0.2,0.5 make local-up` as the README says it, on
    free ports (RabbitMQ: a vhost of its own on the machine's server); the environment
    returned is a new shell's: it has the stack's addresses, not its retry settings."""
    vhost = f"readme-{uuid.uuid4().hex[:8]}"
    broker_url = None  # Kafka: a broker of local-up's own
    if broker_of(installed) == "rabbitmq":
        run(["rabbitmqctl", "add_vhost", vhost], cwd=installed)
        run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            cwd=installed,
        )
        broker_url = f"{RABBIT_HOST_URL}/{vhost}"
    shutil.rmtree(installed / "var", ignore_errors=True)
    env = local_stack_env(installed, broker_url=broker_url)
    short = {"MAX_RETRIES": "3", "RETRY_DELAYS_SECONDS": "0.2,0.5"}
    try:
        run(["make", "local-up"], cwd=installed, env=env | short, timeout=300)
        yield env
    finally:
        subprocess.run(["make", "local-down"], cwd=installed, env=clean_env(env), timeout=300)
        if broker_url:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)


def test_a_dead_letter_made_listed_and_replayed_as_the_readme_shows(
    installed: Path, stack: dict[str, str]
) -> None:
    text = readme(installed)
    for command in ("make poison", "make dlq", "make replay"):
        assert f"{command} SERVICE=billing" in text, command
    assert "RUNNING" in run(["make", "local-status"], cwd=installed, env=stack).stdout
    published = run(["make", "poison", "SERVICE=billing"], cwd=installed, env=stack).stdout
    marker = re.search(r"published poison (\w+)", published)
    assert marker, published

    def listed() -> list[dict[str, Any]]:
        out = run(["make", "-s", "dlq", "SERVICE=billing"], cwd=installed, env=stack).stdout
        return [d for d in json.loads(out) if marker.group(1) in d["payload"]]

    wait_for(lambda: bool(listed()), timeout=60, what="billing to list the poison")
    (letter,) = listed()
    assert letter["attempts"] == 0 and letter["error"].startswith("not valid JSON"), letter
    replayed = run(["make", "-s", "replay", "SERVICE=billing"], cwd=installed, env=stack).stdout
    assert json.loads(replayed)["replayed"] >= 1
    wait_for(lambda: bool(listed()), timeout=60, what="billing to list the poison again")


def test_the_fault_suites_poison_test_reads_the_stacks_retries_not_its_own(
    installed: Path, stack: dict[str, str]
) -> None:
    """The README's `MAX_RETRIES=3 ... make local-up`, then `make faults` from a shell without
    them (the finding: `assert 4 == 6`); its poison test alone, as the rest takes minutes."""
    assert "MAX_RETRIES" not in clean_env(stack)
    test = "tests/faults/test_faults.py::test_a_poison_event_is_dead_lettered_the_rest_flow_"
    test += "and_replay_applies_it_once"
    run(
        [".venv/bin/python", "-m", "pytest", test, "-p", "no:cacheprovider", "-q"],
        cwd=installed,
        env=stack,
    )
