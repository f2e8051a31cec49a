"""The README's settings table lists every setting the code reads (`make catalog` writes it)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "settings_table.py"


def test_the_readme_lists_every_setting() -> None:
    spec = importlib.util.spec_from_file_location("settings_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = module.README.read_text()
    assert module.written(readme) == readme, "README's settings table is stale: make catalog"
    assert "| `MAX_RETRIES` |" in readme and "| `SMTP_HOST` |" in readme
