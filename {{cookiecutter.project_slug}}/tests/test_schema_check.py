"""`make schema-check` inside `make test`: no event schema changed incompatibly."""

from scripts.schema_check import SNAPSHOT, check


def test_every_event_schema_fits_its_snapshot() -> None:
    assert SNAPSHOT.exists(), "no snapshot: run `make catalog`"
    assert check() == []
