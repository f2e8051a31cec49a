"""`make schema-check` in a generated project: incompatible changes fail, compatible pass."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import clean_env

EVENTS = "libs/contracts/src/contracts/events.py"


def schema_check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "schema-check"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_schema_check_names_a_removed_field_and_lets_an_optional_one_in(installed: Path) -> None:
    events = installed / EVENTS
    original = events.read_text()
    user_created_email = "    name: str\n    email: str\n    locale"
    assert user_created_email in original
    try:
        assert schema_check(installed).returncode == 0
        events.write_text(original.replace(user_created_email, "    name: str\n    locale"))
        removed = schema_check(installed)
        assert removed.returncode != 0
        assert "schema-check: UserCreated v2: field 'email' removed" in removed.stderr
        optional = '    email: str\n    nickname: str = ""\n    locale'
        events.write_text(original.replace("    email: str\n    locale", optional))
        added = schema_check(installed)
        assert added.returncode == 0, added.stderr
    finally:
        events.write_text(original)
