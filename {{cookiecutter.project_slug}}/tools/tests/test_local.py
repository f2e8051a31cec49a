"""dev_tools/local.py: what `make dev` runs, and what local-up prints about the broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import ROSTER
from dev_tools import ROOT, local


def test_dev_runs_each_service_once_under_the_reloader_watching_its_code_and_libs() -> None:
    programs = {name: (command, env) for name, command, env in local.service_programs(1, True)}
    assert sorted(programs) == sorted(ROSTER.names)
    for name, (command, env) in programs.items():
        assert command.endswith(f" -m dev_tools local serve-reloading {name}")
        assert env["PORT"] == str(local.port(name))
        watched = local.reload_dirs(name)
        assert ROOT / "services" / name / "src" in watched
        assert {ROOT / "libs" / lib / "src" for lib in ("eventkit", "contracts")} <= set(watched)
        assert all(path.is_dir() for path in watched)


@pytest.mark.parametrize(
    ("broker_url", "shown"),
    [
        ("127.0.0.1:19092,127.0.0.1:19093", "127.0.0.1:19092"),
        ("scheme://someone:secret@broker.internal:5673/path", "broker.internal:5673"),
    ],
)
def test_progress_lines_name_the_broker_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch, broker_url: str, shown: str
) -> None:
    monkeypatch.setenv("BROKER_URL", broker_url)
    assert local.broker_address() == shown


def test_the_control_socket_fits_a_unix_socket_path_wherever_the_project_lies() -> None:
    assert local.control_socket(Path("/srv/app/var")) == Path("/srv/app/var/supervisor.sock")
    deep = Path("/tmp") / ("d" * 120) / "var"
    socket = local.control_socket(deep)
    assert len(str(socket)) <= 100 and socket != local.control_socket(deep.parent / "x" / "var")
