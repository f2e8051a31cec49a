"""`make schema-check` inside `make test`: no event schema changed incompatibly."""

import pytest

from dev_tools.schema_check import SNAPSHOT, check, main


def test_every_event_schema_fits_its_snapshot() -> None:
    assert SNAPSHOT.exists(), "no snapshot: run `make catalog`"
    assert check() == []


def test_a_passing_check_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("schema-check: the ") and "fit event-schemas.json" in line
