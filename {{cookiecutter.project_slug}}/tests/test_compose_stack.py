"""The compose fault driver (tests/conftest.py ComposeStack), against a fake Docker client
that records what it is asked: no Docker engine needed."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import pytest

from eventkit import ServiceSettings


class FakeContainer:
    def __init__(self, log: list[tuple[str, ...]], name: str, project: str = "shop") -> None:
        self.log, self.name = log, name
        self.labels = {
            "com.docker.compose.service": name.split("-")[0],
            "com.docker.compose.project": project,
        }

    def __getattr__(self, method: str) -> Any:
        if method not in ("stop", "start", "restart", "kill", "wait", "pause", "unpause"):
            raise AttributeError(method)

        def call(**kwargs: Any) -> None:
            self.log.append((self.name, method, *(f"{k}={v}" for k, v in kwargs.items())))

        return call


class FakeContainers:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def list(self, **kwargs: Any) -> list[FakeContainer]:
        """Containers that carry every label of the filter, as the Docker API answers."""
        self.client.log.append(("list", repr(kwargs)))
        wanted = [label.split("=", 1) for label in kwargs["filters"]["label"]]
        return [c for c in self.client.all if all(c.labels.get(k) == v for k, v in wanted)]


class FakeClient:
    """What the driver uses of `docker.from_env()`: containers.list and container methods."""

    def __init__(self, *names: str, project: str = "shop") -> None:
        self.log: list[tuple[str, ...]] = []
        self.all = [FakeContainer(self.log, name, project) for name in names]
        self.containers = FakeContainers(self)

    def calls(self) -> list[tuple[str, ...]]:
        """Container calls only, without the lookups."""
        return [entry for entry in self.log if entry[0] != "list"]


@pytest.fixture
def drivers(request: pytest.FixtureRequest) -> ModuleType:
    """tests/conftest.py as pytest loaded it."""
    path = Path(__file__).with_name("conftest.py")
    for plugin in request.config.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and Path(plugin.__file__ or "") == path:
            return plugin
    pytest.fail(f"{path} is not loaded")


def test_steps_act_on_every_container_of_the_named_service(drivers: ModuleType) -> None:
    client = FakeClient("analytics-1", "analytics-2", "billing-1")
    stack = drivers.ComposeStack(client, "shop")
    stack.stop("analytics")
    stack.start("analytics")
    stack.restart("billing")
    assert client.calls() == [
        ("analytics-1", "stop"),
        ("analytics-2", "stop"),
        ("analytics-1", "start"),
        ("analytics-2", "start"),
        ("billing-1", "restart"),
    ]
    labels = ["com.docker.compose.service=billing", "com.docker.compose.project=shop"]
    assert ("list", repr({"all": True, "filters": {"label": labels}})) in client.log


def test_kill_is_sigkill_then_a_start_as_supervisord_would(drivers: ModuleType) -> None:
    client = FakeClient("analytics-1")
    drivers.ComposeStack(client, "shop").kill("analytics")
    assert client.calls() == [
        ("analytics-1", "kill", "signal=SIGKILL"),
        ("analytics-1", "wait", "timeout=60"),
        ("analytics-1", "start"),
    ]


def test_broker_down_pauses_the_broker_and_always_unpauses_it(drivers: ModuleType) -> None:
    kind = ServiceSettings(SERVICE_NAME="tests", PORT=0).broker
    client = FakeClient(f"{kind}-1", "user-1")
    stack = drivers.ComposeStack(client, "shop")
    assert stack.broker() == kind
    with stack.broker_down():
        assert client.calls() == [(f"{kind}-1", "pause")]
    assert client.calls()[-1] == (f"{kind}-1", "unpause")

    with pytest.raises(RuntimeError), stack.broker_down():
        raise RuntimeError("a failing test step")
    assert client.calls()[-2:] == [(f"{kind}-1", "pause"), (f"{kind}-1", "unpause")]


def test_a_service_without_containers_fails_clearly(drivers: ModuleType) -> None:
    stack = drivers.ComposeStack(FakeClient("user-1"), "shop")
    with pytest.raises(pytest.fail.Exception, match="no container of compose service 'billing'"):
        stack.restart("billing")


def test_steps_act_only_on_the_containers_of_its_compose_project(drivers: ModuleType) -> None:
    client = FakeClient("user-1")
    client.all.append(FakeContainer(client.log, "user-1-other", project="other"))
    drivers.ComposeStack(client, project="other").stop("user")
    assert client.calls() == [("user-1-other", "stop")]
    with pytest.raises(pytest.fail.Exception, match="compose project 'elsewhere'"):
        drivers.ComposeStack(client, project="elsewhere").stop("user")


def test_the_compose_project_defaults_to_the_one_compose_names(
    drivers: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    root = tmp_path / "My_Shop"
    root.mkdir()
    assert drivers.compose_project(root) == "my_shop"  # the directory, lowercased
    (root / "docker-compose.yml").write_text("# the stack\nname: shop\nservices: {}\n")
    assert drivers.compose_project(root) == "shop"  # the compose file's own name
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "staging")
    assert drivers.compose_project(root) == "staging"


def test_stack_env_selects_the_driver(
    drivers: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = FakeClient("user-1")
    monkeypatch.setattr(docker, "from_env", lambda: client)
    monkeypatch.setenv("STACK", "compose")
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "shop")
    compose = drivers.stack_from_env(tmp_path)
    assert isinstance(compose, drivers.ComposeStack)
    assert (compose.client, compose.project) == (client, "shop")

    monkeypatch.delenv("STACK")
    assert isinstance(drivers.stack_from_env(tmp_path), drivers.LocalStack)
    monkeypatch.setenv("STACK", "podman")
    with pytest.raises(pytest.fail.Exception, match="STACK='podman'"):
        drivers.stack_from_env(tmp_path)
