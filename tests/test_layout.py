"""The template's own shape: its Python lints where it stands, and eventkit knows no domain."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import TEMPLATE

PROJECT = TEMPLATE / "{{cookiecutter.project_slug}}"
EVENTKIT_SRC = PROJECT / "libs/eventkit/src/eventkit"


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ruff", *args, "--config", "pyproject.toml", "."]
    return subprocess.run(command, cwd=TEMPLATE, capture_output=True, text=True, timeout=120)


def test_the_templates_python_lints_where_it_stands() -> None:
    """No renaming at bake time: the generated project's Python is checked in the template."""
    for args in (["check"], ["format", "--check"]):
        result = ruff(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def domain_words() -> set[str]:
    """Event types, their data fields, stream names and service names, read from the roster."""
    contracts = PROJECT / "libs/contracts/src/contracts"
    words: set[str] = set()
    events = ast.parse((contracts / "events.py").read_text())
    for node in ast.walk(events):
        if isinstance(node, ast.ClassDef):
            words.add(node.name)
            words |= {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
        elif isinstance(node, ast.Constant) and re.fullmatch(r"[a-z]+\.events", str(node.value)):
            words.add(node.value)
    roster = (contracts / "roster.py").read_text()
    words |= set(re.findall(r'ServiceSpec\("(\w+)"', roster))
    # `name` is a field of UserCreated, and also a plain word every library uses.
    return words - {"name"}


def test_eventkit_names_no_event_field_stream_or_service_of_the_domain() -> None:
    words = domain_words()
    assert {"UserCreated", "user_id", "user.events", "billing"} <= words  # the probe works
    found = [
        f"{path.relative_to(PROJECT)}:{number}: {word}"
        for path in sorted(EVENTKIT_SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for word in words
        if re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", line)
    ]
    assert found == [], "eventkit names the domain:\n" + "\n".join(found)


def test_the_post_generation_hook_only_deletes() -> None:
    """Code is never renamed (it lints and imports where it stands); only the lock, the
    broker's docs and its bench baseline are."""
    hook = (TEMPLATE / "hooks/post_gen_project.py").read_text()
    renames = [line.strip() for line in hook.splitlines() if ".rename(" in line]
    assert renames == [
        '(root / LOCK.format(broker=BROKER)).rename(root / "requirements.lock")',
        '(root / pattern.format(broker=BROKER)).rename(root / pattern.replace("-{broker}", ""))',
    ]
    renamed = re.search(r"^PER_BROKER_DOCS = (\[.*?\])$", hook, re.M | re.S)
    assert renamed is not None
    assert ast.literal_eval(renamed.group(1)) == [
        "docs/broker-{broker}.md",
        "docs/settings-{broker}.md",
        "reports/bench-baseline-{broker}.json",  # data, measured on that broker
    ]
    assert ".unlink(" in hook
