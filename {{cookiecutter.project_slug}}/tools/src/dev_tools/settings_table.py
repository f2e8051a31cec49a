"""Write the README's settings table from the settings classes, so it lists every setting.

    python -m dev_tools settings-table           rewrite the table in README.md  (make catalog)
    python -m dev_tools settings-table --check   exit 1 if the table is out of date (make test)

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

README = ROOT / "README.md"
BEGIN = "<!-- settings table: written by `make catalog` from the settings classes -->"
END = "<!-- end of settings table -->"


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
    header = "| setting | default | read by | what it does |\n| --- | --- | --- | --- |"
    return "\n".join([BEGIN, header, *rows, *spec_rows, END])


def written(readme: str) -> str:
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + table() + readme[end:]


def main(argv: list[str]) -> int:
    readme = README.read_text()
    if argv == ["--check"]:
        if written(readme) != readme:
            print("README.md's settings table is out of date: run `make catalog`", file=sys.stderr)
            return 1
        return 0
    README.write_text(written(readme))
    return 0
