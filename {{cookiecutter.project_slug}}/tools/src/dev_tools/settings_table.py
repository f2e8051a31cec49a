"""Write docs/settings.md, the settings table, from the settings classes, so it lists every
setting.

    python -m dev_tools settings-table           rewrite docs/settings.md  (make catalog)
    python -m dev_tools settings-table --check   exit 1 if it is out of date (make test)

Every service shares eventkit's ServiceSettings and its broker adapter's settings; a
service's own settings.py may add more.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from pydantic.fields import FieldInfo

from contracts import ROSTER
from dev_tools import ROOT
from eventkit.settings import ServiceSettings, local_broker_url, shipped_broker

SETTINGS_DOC = ROOT / "docs" / "settings.md"
INTRO = [
    "# Settings",
    "",
    "<!-- Written by tools/src/dev_tools/settings_table.py: do not edit; run `make catalog`. -->",
    "",
    "Each service reads these from the environment (or `.env`). The defaults are in",
    "`ServiceSettings` (`libs/eventkit/src/eventkit/settings.py`), the broker adapter's settings",
    "class beside it in `transports/`, and a service's own `settings.py`.",
    "",
]


def row(name: str, field: FieldInfo, where: str) -> str:
    default: Any = field.default
    if extra(field).get("default_from") == "LOCAL_URL":  # unset: this project's broker
        default = local_broker_url(shipped_broker())
    if isinstance(default, tuple):  # as the environment gives it: comma-separated
        default = ",".join(
            f"{value:g}" if isinstance(value, float) else str(value) for value in default
        )
    shown = (
        "(required)"
        if field.is_required()
        else f"`{default}`"
        if default not in ("", None)
        else "unset"
    )
    return f"| `{name}` | {shown} | {where} | {field.description or ''} |"


def extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def table() -> str:
    adapter = importlib.import_module(f"eventkit.transports.{shipped_broker()}")
    shared = {**ServiceSettings.model_fields, **adapter.BROKER_SETTINGS.model_fields}
    rows = [row(name, field, "every service") for name, field in shared.items()]
    for name in ROSTER.names:
        settings = importlib.import_module(f"{name}_service.settings").Settings
        rows += [
            row(field_name, field, name)
            for field_name, field in settings.model_fields.items()
            if field_name not in shared
        ]
    spec_rows = [
        f"| `{spec.url_setting}` | `http://127.0.0.1:{spec.port}` | tools, tests, rebuilds | "
        f"where {spec.name} answers |"
        for spec in ROSTER.services
    ]
    header = ["| setting | default | read by | what it does |", "| --- | --- | --- | --- |"]
    return "\n".join([*INTRO, *header, *rows, *spec_rows]) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        current = SETTINGS_DOC.read_text() if SETTINGS_DOC.exists() else ""
        if current != table():
            print("docs/settings.md is out of date: run `make catalog`", file=sys.stderr)
            return 1
        return 0
    SETTINGS_DOC.write_text(table())
    return 0
