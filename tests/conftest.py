"""Baking helpers for the template's tests."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parent.parent
BROKERS = ["kafka", "rabbitmq"]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
