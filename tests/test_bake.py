"""Baking every option: valid trees, only the chosen broker, lint-clean, clear errors."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BROKERS, TEMPLATE, bake, broker_of

# Words that name each broker, its client or its local stand-in.
BROKER_WORDS = {
    "kafka": r"kafka|tansu|calfkit",
    "rabbitmq": r"rabbit|aio_pika|aio-pika|amqp",
    "sqs": r"\bsqs|\bsns\b|\bmoto|botocore|\baws\b",
}
# Each broker's client, imported.
BROKER_IMPORTS = {
    "kafka": r"aiokafka|faststream\.kafka",
    "rabbitmq": r"aio_pika|faststream\.rabbit",
    "sqs": r"aiobotocore|botocore|moto",
}


def other_brokers(broker: str, patterns: dict[str, str]) -> str:
    return "|".join(pattern for other, pattern in patterns.items() if other != broker)


# Each file of one broker only, with `{broker}` for its name (hooks/post_gen_project.py).
PER_BROKER = [
    "libs/eventkit/src/eventkit/transports/{broker}.py",
    "libs/eventkit/tests/test_transport_{broker}.py",
    "libs/eventkit/tests/fixtures_{broker}.py",
    "tools/src/dev_tools/local_broker_{broker}.py",
    "tools/src/dev_tools/bench/ceiling_{broker}.py",
]
# eventkit sits beside every adapter: it may name each broker (settings.BROKER, its local
# default URLs, the contract test of every adapter), as long as it does not import the other.
BROKER_NEUTRAL = "libs/eventkit/"


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_default_answers_bake_a_kafka_project(tmp_path: Path) -> None:
    result = bake(tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "fanout_demo"
    adapter = project / "libs/eventkit/src/eventkit/transports/kafka.py"
    assert adapter.read_text().count("KafkaBroker") > 0
    assert not (project / "libs/eventkit/src/eventkit/transports/rabbitmq.py").exists()


# `{{` that is not the template's Jinja: GitHub Actions expressions `${{ ... }}` in
# workflows, Grafana's legend templates `{{label}}` in dashboards, and the Jinja of `make
# service`'s own skeleton. Only these forms, only there, are let through.
NOT_JINJA = {
    ".github/workflows/": re.compile(r"\$\{\{[^{}]*\}\}"),
    "infra/grafana/dashboards/": re.compile(r"\{\{\s*[A-Za-z_]\w*\s*\}\}"),
    "tools/src/dev_tools/service_skeleton/": re.compile(r"\{\{[^{}]*\}\}|\{%[^{}]*%\}"),
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
    broker = broker_of(baked)
    others = [b for b in BROKERS if b != broker]
    words = re.compile(other_brokers(broker, BROKER_WORDS), re.IGNORECASE)
    imports = re.compile(
        rf"^\s*(import|from) ({other_brokers(broker, BROKER_IMPORTS)})\b", re.MULTILINE
    )
    mentions = []
    for p in files(baked):
        relative, text = p.relative_to(baked).as_posix(), p.read_text(errors="replace")
        if relative.startswith(BROKER_NEUTRAL):
            match = imports.search(text) if "/src/" in relative else None
        else:
            match = words.search(text)
        if match:
            mentions.append(f"{relative}: {match.group(0).strip()}")
    assert mentions == []
    for pattern in PER_BROKER:
        assert (baked / pattern.format(broker=broker)).exists(), pattern
        for other in others:
            assert not (baked / pattern.format(broker=other)).exists(), pattern
    docs = sorted(p.name for p in (baked / "docs").iterdir())
    assert docs == ["broker.md", "events.md", "settings.md"], "each broker's docs under one name"
    for other in others:
        leftovers = [p for p in files(baked) if re.search(rf"_{other}\.py$", p.name)]
        assert leftovers == [], f"{other}'s files were generated"
        # A name both adapters own (DELIVERY_LIMIT) is this broker's too.
        own = adapter_settings(other) - adapter_settings(broker)
        settings = re.compile(rf"\b({'|'.join(sorted(own))})\b")
        named = [
            p.relative_to(baked).as_posix()
            for p in files(baked)
            if settings.search(p.read_text(errors="replace"))
        ]
        assert named == [], f"{other}'s settings are named in a {broker} project"


def test_the_hook_knows_every_broker_choice() -> None:
    """The post-generation hook deletes the files of every broker not chosen: its list must
    be cookiecutter.json's."""
    hook = (TEMPLATE / "hooks/post_gen_project.py").read_text()
    (listed,) = re.findall(r"^BROKERS = (\(.*\))", hook, re.M)
    assert list(ast.literal_eval(listed)) == BROKERS


def adapter_settings(broker: str) -> set[str]:
    """The settings `broker`'s adapter owns: the fields of its settings class."""
    path = TEMPLATE / "{{cookiecutter.project_slug}}/libs/eventkit/src/eventkit/transports"
    tree = ast.parse((path / f"{broker}.py").read_text())
    (owned,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Settings")]
    return {
        node.target.id
        for node in owned.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


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


CHOICES = json.loads((TEMPLATE / "cookiecutter.json").read_text())


def test_broker_and_python_version_are_choice_lists_with_kafka_first() -> None:
    assert CHOICES["broker"] == ["kafka", "rabbitmq", "sqs"]
    versions = CHOICES["python_version"]
    assert versions and len(set(versions)) == len(versions)
    assert all(re.fullmatch(r"3\.(1[1-9])", version) for version in versions), versions


@pytest.mark.parametrize(
    ("option", "value"),
    [("broker", "redis"), ("broker", "KAFKA"), ("python_version", "3.19")],
)
def test_an_answer_off_the_choice_list_fails_and_leaves_nothing(
    tmp_path: Path, option: str, value: str
) -> None:
    """Cookiecutter refuses it before anything is written (before the hooks run, too); its
    last line names the option, the answer and the choices."""
    result = bake(tmp_path, **{option: value})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"{value} provided for choice variable {option}" in last, result.stderr
    assert str(CHOICES[option]) in last, last
    assert list(tmp_path.iterdir()) == [], "a half-written project was left behind"


@pytest.mark.parametrize("version", CHOICES["python_version"])
def test_each_python_version_choice_sets_python_version_the_images_and_ci(
    tmp_path: Path, version: str
) -> None:
    result = bake(tmp_path, python_version=version)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "fanout_demo"
    assert (project / ".python-version").read_text() == f"{version}\n"
    assert f"ARG PYTHON_VERSION={version}\n" in (project / "Dockerfile").read_text()
    workflow = (project / ".github/workflows/ci.yml").read_text()
    assert "python-version-file: .python-version" in workflow


# Docker's image reference grammar for a repository path, lowercase components joined by /.
DOCKER_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


def test_an_awkward_project_name_gets_a_slug_and_image_names_docker_accepts(
    tmp_path: Path,
) -> None:
    result = bake(tmp_path, project_name="My - App")
    assert result.returncode == 0, result.stderr
    project = tmp_path / "my_app"
    assert project.is_dir(), sorted(p.name for p in tmp_path.iterdir())
    images = re.findall(r"^\s+image:\s*(\S+)", (project / "docker-compose.yml").read_text(), re.M)
    ours = [image.split(":")[0] for image in images if image.startswith("my_app/")]
    assert ours, images
    assert all(DOCKER_REPOSITORY.fullmatch(image) for image in ours), ours
