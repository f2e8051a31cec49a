"""Baking every option: valid trees, only the chosen broker, lint-clean, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BROKERS, bake

OTHER_BROKER_WORDS = {
    "kafka": re.compile(r"rabbit|aio_pika|aio-pika|amqp", re.IGNORECASE),
    "rabbitmq": re.compile(r"kafka|tansu|calfkit", re.IGNORECASE),
}


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_default_answers_bake_a_kafka_project(tmp_path: Path) -> None:
    result = bake(tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "fanout_demo"
    assert (project / "libs/eventkit/src/eventkit/broker.py").read_text().count("KafkaBroker") > 0


# `{{` that is not Jinja: GitHub Actions expressions `${{ ... }}` in workflows, and Grafana's
# legend templates `{{label}}` in dashboards. Only these forms, only there, are let through.
NOT_JINJA = {
    ".github/workflows/": re.compile(r"\$\{\{[^{}]*\}\}"),
    "infra/grafana/dashboards/": re.compile(r"\{\{\s*[A-Za-z_]\w*\s*\}\}"),
}


def without_non_jinja_braces(relative: str, text: str) -> str:
    for folder, pattern in NOT_JINJA.items():
        if relative.startswith(folder):
            return pattern.sub("", text)
    return text


def test_no_template_syntax_is_left(baked: Path) -> None:
    leftovers = []
    for p in files(baked):
        relative = p.relative_to(baked).as_posix()
        text = without_non_jinja_braces(relative, p.read_text(errors="replace"))
        if re.search(r"\{\{|\{%|cookiecutter", text):
            leftovers.append(relative)
    assert leftovers == []


def test_only_the_chosen_brokers_code_is_generated(baked: Path) -> None:
    broker = "kafka" if baked.name.startswith("kafka") else "rabbitmq"
    mentions = [
        f"{p.relative_to(baked)}: {match.group(0)}"
        for p in files(baked)
        if (match := OTHER_BROKER_WORDS[broker].search(p.read_text(errors="replace")))
    ]
    assert mentions == []
    for name in ("libs/eventkit/src/eventkit/broker.py", "scripts/local_broker.py"):
        assert (baked / name).exists()
    assert not [p for p in files(baked) if re.search(r"_(kafka|rabbitmq)\.py$", p.name)]


def test_generated_tree_passes_ruff(baked: Path) -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=baked, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("answers", "option", "allowed"),
    [
        ({"project_slug": "1-bad slug"}, "project_slug", "Python identifier"),
        ({"project_slug": "class"}, "project_slug", "Python identifier"),
        ({"broker": "redis"}, "broker", "one of: kafka, rabbitmq"),
        ({"python_version": "3.9"}, "python_version", "3.11 or newer"),
    ],
)
def test_an_invalid_answer_stops_with_one_clear_line(
    tmp_path: Path, answers: dict[str, str], option: str, allowed: str
) -> None:
    result = bake(tmp_path, **answers)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr
    assert option in errors[0]
    assert allowed in errors[0]
    assert list(tmp_path.iterdir()) == [], "a half-written project was left behind"


@pytest.mark.parametrize("broker", BROKERS)
def test_broker_answer_is_case_sensitive_and_exact(tmp_path: Path, broker: str) -> None:
    result = bake(tmp_path, broker=broker.upper())
    assert result.returncode != 0
    assert "one of: kafka, rabbitmq" in result.stderr
