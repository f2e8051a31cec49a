"""Fixtures of the end-to-end and fault suites: they run against whatever stack is up.

The services are those of the roster (libs/contracts); each answers at its `<NAME>_URL`
(USER_URL, BILLING_URL, ...), by default on localhost at its roster port. Every service has
a fixture of its name: an HTTP client for it. `services` holds the four a sign-up goes
through, and `new_user`, for the tests that follow one through all of them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import ROSTER, USER_EVENTS
from eventkit import ServiceSettings
from eventkit.settings import admin_token
from eventkit.transports import Outgoing, create_transport
from tests.e2e.services import NewUser, Services

ROOT = Path(__file__).resolve().parent.parent


def settings(name: str = "tests") -> ServiceSettings:
    """Settings as a service of this stack reads them (BROKER, BROKER_URL, ... from the env)."""
    return ServiceSettings(SERVICE_NAME=name, PORT=0, DATABASE_URL="sqlite://")


@pytest.fixture(scope="session")
def clients() -> Iterator[dict[str, httpx.Client]]:
    token = admin_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    clients = {
        name: httpx.Client(base_url=ROSTER.url(name), timeout=10, headers=headers)
        for name in ROSTER.names
    }
    not_ready = []
    for name, client in clients.items():
        status: int | str
        try:
            status = client.get("/ready").status_code
        except httpx.HTTPError as exc:
            status = repr(exc)
        if status != 200:
            not_ready.append(f"{name} at {client.base_url}: {status}")
    if not_ready:
        pytest.fail("stack not ready (start it with `make local-up`): " + "; ".join(not_ready))
    yield clients
    for client in clients.values():
        client.close()


def _client_of(name: str) -> Any:
    @pytest.fixture(name=name)
    def fixture(clients: dict[str, httpx.Client]) -> httpx.Client:
        return clients[name]

    return fixture


for _name in ROSTER.names:  # a fixture per service, named for it: `user`, `billing`, ...
    globals()[_name] = _client_of(_name)


def unique_email() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def new_user(user: httpx.Client) -> NewUser:
    """Creates a user with a fresh email through the API; asserts the 201."""

    def create(name: str = "Ada") -> dict[str, Any]:
        response = user.post("/users", json={"name": name, "email": unique_email()})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create


@pytest.fixture
def services(clients: dict[str, httpx.Client], new_user: NewUser) -> Services:
    return Services(
        user=clients["user"],
        billing=clients["billing"],
        notification=clients["notification"],
        analytics=clients["analytics"],
        new_user=new_user,
    )


def _publish_raw(*messages: tuple[bytes, str], stream: str = USER_EVENTS) -> None:
    async def send() -> None:
        transport = create_transport(settings(f"tests-{uuid.uuid4().hex[:6]}"))
        await transport.start()
        try:
            for body, key in messages:
                await transport.publish(
                    Outgoing(stream=stream, body=body, key=key, event_type="tests")
                )
        finally:
            await transport.stop()

    asyncio.run(send())


@pytest.fixture
def publish_raw() -> Callable[..., None]:
    """Publishes raw bodies (with their keys) straight to the broker, as a producer would."""
    return _publish_raw


class LocalStack:
    """Fault steps for a stack started by `make local-up`: its processes, via supervisorctl.

    One small interface (stop, start, kill, restart a process) so a fault test does not
    care how the stack runs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "var" / "supervisord.conf"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def programs(self) -> dict[str, str]:
        """Process name -> state (RUNNING, STOPPED, ...)."""
        lines = self._ctl("status").stdout.splitlines() if self.conf.exists() else []
        return {line.split()[0]: line.split()[1] for line in lines if len(line.split()) > 1}

    def broker(self) -> str:
        if "broker" not in self.programs():
            pytest.fail(
                "the broker is not run by local-up, so it cannot be taken down here; point "
                "BROKER_URL at a free local port and local-up starts one of its own"
            )
        return "broker"

    def stop(self, name: str) -> None:
        self._checked("stop", name)

    def start(self, name: str) -> None:
        self._checked("start", name)

    def restart(self, name: str) -> None:
        self._checked("restart", name)

    @contextmanager
    def broker_down(self) -> Iterator[None]:
        """The broker unreachable for the block, keeping what it has stored.

        dev_tools/local_broker_<kind>.py says how: stopped and started, or frozen (SIGSTOP)
        and thawed where stopping would lose its log.
        """
        name = self.broker()
        module = importlib.import_module(f"dev_tools.local_broker_{settings().broker}")
        down, up = (
            (("stop",), ("start",))
            if module.OUTAGE == "stop"
            else (
                ("signal", "STOP"),
                ("signal", "CONT"),
            )
        )
        self._checked(*down, name)
        try:
            yield
        finally:
            self._checked(*up, name)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no ack; supervisord restarts it."""
        self._checked("signal", "KILL", name)

    def _checked(self, *args: str) -> None:
        result = self._ctl(*args)
        assert result.returncode == 0, f"supervisorctl {' '.join(args)}: {result.stdout}"


class ComposeStack:
    """Fault steps for the docker compose stack (`make up`): its containers, via the Docker SDK.

    The same interface as LocalStack. A name is a compose service (`user`, `analytics`, or
    the broker's, which `broker()` gives); a step acts on every container of it, and only on
    those of one compose project (`project`), found by the labels compose gives them.
    """

    SERVICE_LABEL = "com.docker.compose.service"
    PROJECT_LABEL = "com.docker.compose.project"

    def __init__(self, client: Any, project: str) -> None:
        self.client = client  # docker.from_env()
        self.project = project

    def containers(self, name: str) -> list[Any]:
        labels = [f"{self.SERVICE_LABEL}={name}", f"{self.PROJECT_LABEL}={self.project}"]
        found = [
            container
            for container in self.client.containers.list(all=True, filters={"label": labels})
            if container.labels.get(self.PROJECT_LABEL) == self.project
        ]
        if not found:
            pytest.fail(
                f"no container of compose service {name!r} in compose project "
                f"{self.project!r}: start the stack (make up), or set COMPOSE_PROJECT_NAME"
            )
        return found

    def broker(self) -> str:
        """The broker's compose service is named for its kind."""
        return settings().broker

    def stop(self, name: str) -> None:
        for container in self.containers(name):
            container.stop()

    def start(self, name: str) -> None:
        for container in self.containers(name):
            container.start()

    def restart(self, name: str) -> None:
        for container in self.containers(name):
            container.restart()

    @contextmanager
    def broker_down(self) -> Iterator[None]:
        """The broker frozen (docker pause) for the block, keeping what it has stored."""
        containers = self.containers(self.broker())
        for container in containers:
            container.pause()
        try:
            yield
        finally:
            for container in containers:
                container.unpause()

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no ack. Docker does not restart a container it was told to
        kill, so it is started again here, as supervisord does for LocalStack."""
        for container in self.containers(name):
            container.kill(signal="SIGKILL")
            container.wait(timeout=60)
            container.start()


Stack = LocalStack | ComposeStack


def compose_project(root: Path) -> str:
    """The compose project of the stack in `root`, as `docker compose` there names it:
    COMPOSE_PROJECT_NAME, else the compose file's top-level `name:`, else the directory name
    of the project root, lowercased."""
    if name := os.environ.get("COMPOSE_PROJECT_NAME"):
        return name
    compose_file = root / "docker-compose.yml"
    text = compose_file.read_text() if compose_file.exists() else ""
    if match := re.search(r"^name:\s*[\"']?([a-z0-9][a-z0-9_-]*)", text, re.MULTILINE):
        return match.group(1)
    return re.sub(r"[^a-z0-9_-]", "", root.resolve().name.lower())


def stack_from_env(root: Path) -> Stack:
    """STACK=compose: the compose stack (Docker SDK); otherwise, the processes of local-up."""
    kind = os.environ.get("STACK", "local")
    if kind == "compose":
        import docker  # the Docker SDK, a dev extra; only the compose driver needs it

        return ComposeStack(docker.from_env(), compose_project(root))
    if kind != "local":
        pytest.fail(f"STACK={kind!r}: use local (make local-up, the default) or compose (make up)")
    return LocalStack(root)


@pytest.fixture(scope="session")
def stack() -> Stack:
    found = stack_from_env(ROOT)
    if isinstance(found, ComposeStack):
        for name in ROSTER.names:
            found.containers(name)  # fails naming a service that has no container
    elif not found.programs():
        pytest.fail("fault tests drive the processes of `make local-up`; start it first")
    return found
