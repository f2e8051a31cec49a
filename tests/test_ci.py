"""The generated project's CI workflow, for each broker: valid by GitHub's schema, on the chosen
Python, installing from the lock (and failing when it is stale), and running what keeps the
deployment files honest (lint and tests, compose config for every profile, hadolint on every
Dockerfile, the Kubernetes base, and the generator's check that compose, Kubernetes,
Prometheus and PostgreSQL init follow the roster), which passes on a fresh bake.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PYTHON_VERSION, broker_of, run, tool


def workflow(project: Path) -> dict[str, Any]:
    jobs: dict[str, Any] = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())[
        "jobs"
    ]
    return jobs


def commands(jobs: dict[str, Any], job: str | None = None) -> str:
    return "\n".join(
        step.get("run", "")
        for name, spec in jobs.items()
        if job in (None, name)
        for step in spec["steps"]
    )


def test_ci_workflow_is_valid_and_uses_the_chosen_python(baked: Path) -> None:
    path = baked / ".github/workflows/ci.yml"
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert "{%" not in text and not re.search(r"(?<!\$)\{\{", text), "Jinja left in the workflow"
    jobs = workflow(baked)
    versions = {
        step["with"].get("python-version-file") or step["with"]["python-version"]
        for job in jobs.values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/setup-python")
    }
    assert versions == {".python-version"}
    assert (baked / ".python-version").read_text().strip() == PYTHON_VERSION
    for command in ("make lint", "make lock-check", "make test", "make up", "make e2e"):
        assert command in commands(jobs), command
    for name, job in jobs.items():  # every job installs from requirements.lock, with uv's cache
        if "make install" in commands(jobs, name):
            caches = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache")]
            assert caches and caches[0]["with"]["path"] == "~/.cache/uv", name
            assert "hashFiles('requirements.lock')" in caches[0]["with"]["key"], name
    services = set(jobs["test"]["services"])
    # Kafka's and SNS + SQS's tests start their own broker (tansu, moto_server) from .venv.
    broker = broker_of(baked)
    assert services == ({"postgres", "rabbitmq"} if broker == "rabbitmq" else {"postgres"})
    # The tests reach RabbitMQ at the service container; e2e reaches compose's broker.
    assert ("BROKER_URL" in jobs["test"]["env"]) == (broker == "rabbitmq")
    e2e = commands(jobs, "compose-e2e")
    if broker == "sqs":
        assert 'export BROKER_URL="http://localhost:${MOTO_HOST_PORT:-4566}"' in e2e
    if broker == "kafka":
        assert "BROKER_URL" not in e2e


def test_ci_checks_every_deployment_file(baked: Path) -> None:
    deploy = commands(workflow(baked), "deploy-files")
    # The generator's check: compose, Kubernetes, Prometheus and Postgres init follow the roster.
    assert "python -m dev_tools deploy-files --check" in deploy
    assert "make install" in deploy, "the check imports the roster, installed from the lock"
    # compose config for the default services and every profile the file has, and scaled.
    assert "docker compose config --quiet" in deploy
    assert re.search(r"for \w+ in \$\(docker compose config --profiles\)", deploy)
    assert 'docker compose --profile "$profile" config --quiet' in deploy
    assert "-f infra/compose/scale.yml config --quiet" in deploy
    # hadolint on every Dockerfile git knows.
    (pattern,) = re.findall(r"git ls-files -z '([^']+)' \| xargs -0 hadolint", deploy)
    dockerfiles = [
        p.relative_to(baked).as_posix()
        for p in baked.rglob("*")
        if p.is_file() and ".venv" not in p.parts and p.name.endswith("Dockerfile")
    ]
    assert dockerfiles and all(fnmatch.fnmatch(d, pattern) for d in dockerfiles), dockerfiles
    # The Kubernetes base, rendered and validated.
    assert "kubectl kustomize infra/k8s/base" in deploy
    assert "kubernetes-validate --strict" in deploy


@pytest.mark.slow
def test_the_deployment_files_follow_the_roster_on_a_fresh_bake(installed: Path) -> None:
    """What CI's deploy-files job and the project's own tests run: the generator finds every
    file in step with the roster as baked, and its test passes."""
    check = run([".venv/bin/python", "-m", "dev_tools", "deploy-files", "--check"], cwd=installed)
    assert check.stdout == "" and check.stderr == ""
    written = run([".venv/bin/python", "-m", "dev_tools", "deploy-files"], cwd=installed)
    assert written.stdout.strip() == "every deployment file is in step with the roster"
    run(
        [".venv/bin/python", "-m", "pytest", "-q", "tools/tests/test_deploy_files.py"],
        cwd=installed,
    )
