"""`make schema-check` inside `make test`: no event schema changed incompatibly."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "schema_check.py"


def test_every_event_schema_fits_its_snapshot() -> None:
    spec = importlib.util.spec_from_file_location("schema_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SNAPSHOT.exists(), "no snapshot: run `make catalog`"
    assert module.check() == []
