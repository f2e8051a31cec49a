"""The deployment files say what the roster says (dev_tools/deploy_files.py, make deploy-files):
compose, Prometheus, PostgreSQL init and Kubernetes name each service of the roster, and no
other; a broker's own deployment files (dev_tools/deploy_files_<broker>.py, if it has one)
add to them and nothing else."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from contracts import ROSTER
from dev_tools import ROOT
from eventkit.roster import ServiceSpec

K8S = "infra/k8s"  # the Kubernetes files, every one copied (a broker's own among them)


@pytest.fixture(scope="module")
def deploy_files() -> ModuleType:
    from dev_tools import deploy_files

    return deploy_files


@pytest.fixture
def copy(deploy_files: ModuleType, tmp_path: Path) -> Path:
    """The files the generator reads and writes, copied where a test may change them."""
    for path in [*deploy_files.REGIONS, "pyproject.toml"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    shutil.copytree(ROOT / K8S, tmp_path / K8S, dirs_exist_ok=True)
    return tmp_path


def test_the_deployment_files_are_in_step_with_the_roster(
    deploy_files: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    status = deploy_files.main(["--check"])
    assert status == 0, f"run `make deploy-files`:\n{capsys.readouterr().err[-4000:]}"


def test_a_new_service_makes_every_file_stale_until_rewritten(
    deploy_files: ModuleType, copy: Path
) -> None:
    audit = ServiceSpec("audit", 8099, subscribes=tuple(ROSTER.streams[:1]))
    roster = dataclasses.replace(ROSTER, services=(*ROSTER.services, audit))
    stale = {p.relative_to(copy).as_posix() for p in deploy_files.stale_files(copy, roster)}
    producer = ROSTER.producer(ROSTER.streams[0])
    # Besides, whichever of the broker's own files the new service changes (it may have none).
    own = deploy_files.broker_files(copy, deploy_files.load_project(copy, roster))
    assert stale - {p.relative_to(copy).as_posix() for p in own} == {
        *deploy_files.REGIONS,
        "infra/k8s/base/audit/kustomization.yaml",
    }

    deploy_files.write(copy, roster)
    assert deploy_files.stale_files(copy, roster) == {}
    compose = (copy / "docker-compose.yml").read_text()
    assert "${AUDIT_HOST_PORT:-8099}:8000" in compose
    assert f"{producer.url_setting}: http://{producer.name}:8000" in compose
    assert 'CREATE DATABASE "audit";' in (copy / "infra/postgres/init-databases.sql").read_text()

    # Gone from the roster again: its generated Kubernetes folder goes with it.
    assert deploy_files.stale_files(copy)
    deploy_files.write(copy)
    assert deploy_files.stale_files(copy) == {}
    assert not (copy / "infra/k8s/base/audit").exists()
    assert not [p for p in (copy / K8S).rglob("*") if "audit" in p.name]


def test_an_edit_inside_a_region_is_found_and_undone(
    deploy_files: ModuleType, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = copy / "infra/postgres/init-databases.sql"
    original = sql.read_text()
    sql.write_text(original.replace(f'"{ROSTER.names[-1]}"', '"renamed"'))
    assert deploy_files.main(["--check"], root=copy) == 1
    err = capsys.readouterr().err
    assert "infra/postgres/init-databases.sql is out of step with the roster" in err
    assert '+CREATE DATABASE "' in err
    assert deploy_files.main([], root=copy) == 0
    assert sql.read_text() == original


def test_a_file_without_its_markers_is_named(
    deploy_files: ModuleType, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus = copy / "infra/prometheus/prometheus.yml"
    prometheus.write_text(prometheus.read_text().replace("# END generated: scrape jobs\n", ""))
    assert deploy_files.main(["--check"], root=copy) == 1
    assert "infra/prometheus/prometheus.yml: needs one region 'scrape jobs'" in (
        capsys.readouterr().err
    )


def test_a_broker_adds_only_its_own_modules_files_and_patches(
    deploy_files: ModuleType, copy: Path
) -> None:
    """What the project's broker writes beyond the shared files is its module's: its files,
    and its lines in each service's kustomization.yaml. `memory`, no broker, has none."""
    project = deploy_files.load_project(copy, ROSTER)
    assert deploy_files.broker_module("memory") is None
    shared = deploy_files.expected_files(copy, dataclasses.replace(project, broker="memory"))
    files = deploy_files.expected_files(copy, project)
    own = deploy_files.broker_files(copy, project)
    assert files.keys() == shared.keys() | own.keys()
    assert not shared.keys() & own.keys()
    kustomizations = set()
    for spec in ROSTER.services:
        file = copy / deploy_files.K8S_BASE / spec.name / "kustomization.yaml"
        kustomizations.add(file)
        added = "".join(f"{line}\n" for line in deploy_files.broker_patches(project, spec))
        if added:
            assert files[file].count(added) == 1, file
        assert files[file].replace(added, "") == shared[file], file
    for file in shared.keys() - kustomizations:
        assert files[file] == shared[file], file
