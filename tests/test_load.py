"""`make load` and `make bench` of each baked project, briefly, against its own local stack.

Both run on free ports and SQLite; Kafka is the broker local-up starts, RabbitMQ the
machine's server in a fresh vhost. Short runs: this checks that the load test and the
benchmark work and report, not how fast the stack is (README "Load tests and benchmark").
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BROKERS, clean_env, local_stack_env, run

pytestmark = pytest.mark.slow
RABBIT_HOST_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672")
READERS = (
    "from contracts import ROSTER, USER_EVENTS; "
    "print(*(spec.name for spec in ROSTER.subscribers(USER_EVENTS)))"
)


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
    """The topics and consumer groups (Kafka), or queues and exchanges (RabbitMQ), of the
    stack's broker."""
    if (project / "scripts/local_broker_kafka.py").exists():
        code = [".venv/bin/python", "-c", KAFKA_NAMES]
        return set(run(code, cwd=project, env=env).stdout.split())
    vhost = env["BROKER_URL"].rsplit("/", 1)[1]
    names: set[str] = set()
    for kind in ("list_queues", "list_exchanges"):
        listed = run(["rabbitmqctl", "-q", kind, "-p", vhost, "name"], cwd=project).stdout
        names |= {f"{kind}:{name}" for name in listed.split()}
    return names


@pytest.fixture
def local_stack(
    request: pytest.FixtureRequest, project_for: Callable[[str, bool], Path]
) -> Iterator[tuple[Path, dict[str, str]]]:
    """The project of the broker in `request.param`, its stack up on free ports; always down."""
    broker: str = request.param
    project = project_for(broker, True)
    shutil.rmtree(project / "var", ignore_errors=True)
    shutil.rmtree(project / "reports", ignore_errors=True)
    ctl = shutil.which("rabbitmqctl")
    vhost = None
    broker_url = None  # Kafka: a broker of local-up's own, on a free port
    if broker == "rabbitmq":
        if ctl is None:
            pytest.fail("rabbitmqctl not found: these tests need the machine's RabbitMQ server")
        vhost = f"load-{uuid.uuid4().hex[:8]}"
        run([ctl, "add_vhost", vhost], cwd=Path.cwd())
        run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], cwd=Path.cwd())
        broker_url = f"{RABBIT_HOST_URL}/{vhost}"
    env = local_stack_env(project, broker_url=broker_url)
    try:
        run(["make", "local-up"], cwd=project, env=env, timeout=180)
        yield project, env
    finally:
        subprocess.run(["make", "local-down"], cwd=project, env=clean_env(env), capture_output=True)
        shutil.rmtree(project / "var", ignore_errors=True)
        if vhost is not None and ctl is not None:
            subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)


@pytest.mark.parametrize("local_stack", BROKERS, indirect=True)
def test_load_and_bench_run_and_report(local_stack: tuple[Path, dict[str, str]]) -> None:
    project, env = local_stack

    load = ["make", "load", "USERS=20", "RATE=5", "DURATION=20s"]
    result = run(load, cwd=project, env=env, timeout=180)
    with (project / "reports/load/locust_stats.csv").open() as stats:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}
    total = rows[("", "Aggregated")]
    assert int(total["Request Count"]) > 50, result.stdout[-3000:]
    assert int(total["Failure Count"]) == 0, result.stdout[-3000:]
    fanout = rows[("FANOUT", "fanout_lag")]
    assert int(fanout["Request Count"]) > 0 and int(fanout["Failure Count"]) == 0
    assert float(fanout["Median Response Time"]) > 0
    assert ("POST", "POST /users") in rows and ("POST", "POST /invoices") in rows
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
    assert ("broker" in report["processes"]) == (report["broker"] == "kafka")  # RabbitMQ: shared
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
