"""`make service NAME=payments` adds a service that works end to end, on each broker.

One bake and one `make install` per broker. Bad or taken names each get one line and leave
the tree as it was; then the new service's tests and lint pass with everyone else's, and
under `make local-up` (free ports, a broker of the run's own) it consumes a sign-up.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import (
    BROKERS,
    bake,
    clean_env,
    local_stack_env,
    roster_names,
    run,
    summary_line,
    wait_for,
)
from test_generated import (  # noqa: F401  (rabbit_vhost: a fixture, asked for by name)
    RABBIT_HOST_URL,
    alive,
    rabbit_vhost,
    supervisor_pids,
)

pytestmark = pytest.mark.slow

# (make arguments, what the one line must say)
REFUSED = [
    (["NAME="], "NAME is missing"),
    (["NAME=Bad-Name"], "'Bad-Name' is not allowed"),
    (["NAME=class"], "'class' is a Python keyword"),
    (["NAME=user"], "'user' is taken"),
    (["NAME=tests"], "'tests' would clash"),
    (["NAME=payments", "SUBSCRIBES=user.events,nope.events"], "'nope.events'"),
]


def snapshot(project: Path) -> dict[str, tuple[int, str]]:
    """Every file outside .venv: its modification time and content."""
    return {
        str(path.relative_to(project)): (
            path.stat().st_mtime_ns,
            hashlib.sha1(path.read_bytes()).hexdigest(),
        )
        for path in project.rglob("*")
        if path.is_file() and ".venv" not in path.relative_to(project).parts
    }


def refuses(project: Path, args: list[str], problem: str) -> None:
    before = snapshot(project)
    result = subprocess.run(
        ["make", "service", *args], cwd=project, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode != 0, result.stdout
    said = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(said) == 1 and problem in said[0], result.stderr
    assert said[0].startswith("make service: "), said
    assert snapshot(project) == before, f"make service {' '.join(args)} changed the tree"


def consumed(metrics: str, event_type: str) -> float:
    pattern = rf'^eventkit_events_consumed_total\{{[^}}]*type="{event_type}"[^}}]*\}} (\S+)$'
    return sum(float(m[1]) for m in re.finditer(pattern, metrics, re.MULTILINE))


@pytest.mark.parametrize("broker", BROKERS)
def test_make_service_adds_a_service_that_works_end_to_end(
    broker: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert bake(tmp_path, broker=broker, project_slug=f"{broker}_svc").returncode == 0
    project = tmp_path / f"{broker}_svc"
    run(["make", "install"], cwd=project, timeout=900)
    for args, problem in REFUSED:
        refuses(project, args, problem)

    made = run(["make", "service", "NAME=payments"], cwd=project, timeout=300).stdout
    assert "skipped" not in made, made
    roster = (project / "libs/contracts/src/contracts/roster.py").read_text()
    assert 'ServiceSpec("payments", 8005, subscribes=(USER_EVENTS,))' in roster
    package = project / "services/payments/src/payments_service"
    assert (package / "migrations/versions/0001_initial_schema.py").exists()
    # Its place in what cannot read the roster, rewritten from it.
    assert re.search(r"^  payments:$", (project / "docker-compose.yml").read_text(), re.M)
    assert "job_name: payments" in (project / "infra/prometheus/prometheus.yml").read_text()
    assert "payments" in (project / "infra/postgres/init-databases.sql").read_text()
    assert (project / "infra/k8s/base/payments/kustomization.yaml").exists()
    assert "`dlq.payments`" in (project / "docs/events.md").read_text()
    refuses(project, ["NAME=payments"], "'payments' is taken")

    # Everyone's tests but eventkit's, which `make service` leaves alone (and which
    # test_generated runs): the new service's with the roster's, catalog's and deploy files'.
    everyone = [".venv/bin/python", "-m", "pytest", "--ignore=libs/eventkit"]
    tested = run(everyone, cwd=project, timeout=900)
    summary = summary_line(tested.stdout)
    assert " passed" in summary and "failed" not in summary, summary
    collected = run(
        [".venv/bin/python", "-m", "pytest", "--collect-only", "-q", "services/payments"],
        cwd=project,
    ).stdout
    assert "test_last_events.py" in collected
    run(["make", "lint"], cwd=project)

    names = roster_names(project)
    assert names[-1] == "payments", names
    # Kafka: tansu, which local-up starts on a free port; RabbitMQ: a fresh vhost.
    vhost = request.getfixturevalue("rabbit_vhost") if broker == "rabbitmq" else None
    env = local_stack_env(project, broker_url=vhost and f"{RABBIT_HOST_URL}/{vhost}")
    env["READY_TIMEOUT"] = "120"
    started: dict[str, int] = {}
    try:
        run(["make", "local-up"], cwd=project, env=env, timeout=240)
        started = supervisor_pids(project)
        assert set(names) <= set(started), started
        signup = {"name": "Pay Me", "email": f"pay-{uuid.uuid4().hex[:8]}@example.com"}
        created = httpx.post(f"{env['USER_URL']}/users", json=signup, timeout=10)
        assert created.status_code == 201, created.text
        metrics = f"{env['PAYMENTS_URL']}/metrics"
        wait_for(
            lambda: consumed(httpx.get(metrics).text, "UserCreated") >= 1,
            timeout=60,
            what="payments' /metrics to count the sign-up's UserCreated",
        )
        seen = httpx.get(f"{env['PAYMENTS_URL']}/aggregates/{created.json()['id']}")
        assert seen.status_code == 200 and seen.json()["last_type"] == "UserCreated", seen.text
    finally:
        down = subprocess.run(
            ["make", "local-down"], cwd=project, env=clean_env(env), capture_output=True, text=True
        )
    assert down.returncode == 0, down.stderr
    wait_for(
        lambda: not any(alive(pid) for pid in started.values()),
        timeout=30,
        what="local-down to stop the broker and every service",
    )
