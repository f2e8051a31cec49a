"""Write docs/events.md, the event catalog, and the README's diagram from the code.

    python -m dev_tools catalog           write docs/events.md and the diagram   (make catalog)
    python -m dev_tools catalog --check   exit 1 if either is out of date        (make test does)

Event types, versions, fields and streams come from the event registry, `EVENTS` in
libs/contracts/src/contracts/events.py; each stream's producer and subscribers from the
roster, `ROSTER` in libs/contracts/src/contracts/roster.py. A service added to the roster
shows up here. The diagram (mermaid: services, streams, the events on each) is in both
files; in README.md it is the region between DIAGRAM_BEGIN and DIAGRAM_END.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import types
import typing
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from contracts import EVENTS, ROSTER
from dev_tools import ROOT
from eventkit.envelope import Envelope
from eventkit.roster import ServiceSpec, dead_letter_stream

CATALOG = ROOT / "docs" / "events.md"
README = ROOT / "README.md"
DIAGRAM_BEGIN = (
    "<!-- services and streams: written by `make catalog` from the roster and events -->"
)
DIAGRAM_END = "<!-- end of services and streams -->"
SNAPSHOT = ROOT / "libs" / "contracts" / "event-schemas.json"
SNAPSHOT_VERSIONS: dict[str, dict[str, dict[str, Any]]] = (
    json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
)
NONE = "\N{EN DASH}"  # an empty table cell

TYPE_NAMES: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Decimal: "decimal, as a string",
    datetime: "date-time, ISO 8601",
    date: "date, ISO 8601",
    uuid.UUID: "uuid",
    Any: "any",
}
CONSTRAINTS = (
    ("gt", "> {}"),
    ("ge", ">= {}"),
    ("lt", "< {}"),
    ("le", "<= {}"),
    ("min_length", "at least {} characters"),
    ("max_length", "at most {} long"),
    ("pattern", "matches `{}`"),
)


def type_name(annotation: object) -> str:
    if annotation in TYPE_NAMES:
        return TYPE_NAMES[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping) or annotation is dict:
        return "object"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"object `{annotation.__name__}`"
    return getattr(annotation, "__name__", str(annotation))


def notes(field: FieldInfo) -> str:
    found = [
        "not empty" if (attr, value) == ("min_length", 1) else template.format(value)
        for meta in field.metadata
        for attr, template in CONSTRAINTS
        if (value := getattr(meta, attr, None)) is not None
    ]
    if field.default_factory in (dict, list):
        found.append(f"optional, default `{field.default_factory()}`")
    elif field.default_factory is not None:
        found.append("optional, generated when left out")
    elif field.default is None:
        found.append("optional")
    elif not field.is_required():
        found.append(f"optional, default `{field.default!r}`")
    if field.description:
        found.append(field.description)
    return "; ".join(found) or NONE


def fields_table(model: type[BaseModel]) -> list[str]:
    rows = ["| field | type | notes |", "| --- | --- | --- |"]
    for name, field in model.model_fields.items():
        rows.append(f"| `{name}` | {type_name(field.annotation)} | {notes(field)} |")
    return rows


def codes(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or NONE


def names(specs: list[ServiceSpec]) -> str:
    return ", ".join(spec.name for spec in specs)


def diagram() -> list[str]:
    """A mermaid flowchart: each service, each stream, the events its producer publishes on
    it, and the services that subscribe to it."""

    def service(name: str) -> str:
        return "service_" + re.sub(r"\W", "_", name)

    def stream_node(stream: str) -> str:
        return "stream_" + re.sub(r"\W", "_", stream)

    lines = ["```mermaid", "flowchart LR"]
    lines += [f'    {service(spec.name)}["{spec.name} :{spec.port}"]' for spec in ROSTER.services]
    lines += [f'    {stream_node(stream)}(["{stream}"])' for stream in ROSTER.streams]
    for stream in ROSTER.streams:
        events = "<br/>".join(t.name for t in EVENTS.of_stream(stream))
        label = f'|"{events}"|' if events else ""
        lines.append(
            f"    {service(ROSTER.producer(stream).name)} -->{label} {stream_node(stream)}"
        )
        lines += [
            f"    {stream_node(stream)} --> {service(reader.name)}"
            for reader in ROSTER.subscribers(stream)
        ]
    return [*lines, "```"]


def readme_with_diagram(readme: str) -> str:
    """README.md with the diagram between its markers (unchanged if it has none)."""
    if DIAGRAM_BEGIN not in readme or DIAGRAM_END not in readme:
        return readme
    start, end = readme.index(DIAGRAM_BEGIN), readme.index(DIAGRAM_END) + len(DIAGRAM_END)
    return readme[:start] + "\n".join([DIAGRAM_BEGIN, *diagram(), DIAGRAM_END]) + readme[end:]


def render() -> str:
    out = [
        "# Event catalog",
        "",
        "<!-- Written by tools/src/dev_tools/catalog.py: do not edit; run `make catalog`. -->",
        "",
        "Generated from the event registry (`libs/contracts/src/contracts/events.py`) and the",
        "roster (`libs/contracts/src/contracts/roster.py`). Run `make catalog` after changing",
        "either; `make test` fails while this file is out of date.",
        "",
        "## Services and streams",
        "",
        "Each service publishes its events on the streams it owns; each arrow out of a stream",
        "is a service that subscribes to it.",
        "",
        *diagram(),
        "",
        "## Streams",
        "",
        "Each stream has one producer. A subscriber receives every event of the stream and",
        "ignores the types it has no use for.",
        "",
        "| stream | producer | subscribers | events |",
        "| --- | --- | --- | --- |",
    ]
    for stream in ROSTER.streams:
        events = [t.name for t in EVENTS.of_stream(stream)]
        readers = names(ROSTER.subscribers(stream)) or NONE
        out.append(f"| `{stream}` | {ROSTER.producer(stream).name} | {readers} | {codes(events)} |")
    out += [
        "",
        "## Services",
        "",
        "A subscriber parks an event it cannot apply in its dead letters, `dlq.<service>`.",
        "",
        "| service | publishes | subscribes to | dead letters |",
        "| --- | --- | --- | --- |",
    ]
    for spec in ROSTER.services:
        dlq = f"`{dead_letter_stream(spec.name)}`" if spec.subscribes else NONE
        published, subscribed = codes(list(spec.publishes)), codes(list(spec.subscribes))
        out.append(f"| {spec.name} | {published} | {subscribed} | {dlq} |")
    out += [
        "",
        "## Envelope",
        "",
        "Every event travels in this envelope; `data` holds the fields of its type, below.",
        "",
        *fields_table(Envelope),
        "",
        "## Event types",
    ]
    for event in EVENTS:
        older = sorted(v for (name, v) in EVENTS.upcasters if name == event.name)
        upcast = ""
        if older:
            versions = "version {} is" if len(older) == 1 else "versions {} are"
            upcast = f"; {versions.format(', '.join(map(str, older)))} upcast to it"
        out += [
            "",
            f"### {event.name}",
            "",
            f"Version {event.version}{upcast}. Stream `{event.stream}`, produced by "
            f"{ROSTER.producer(event.stream).name}, received by "
            f"{names(ROSTER.subscribers(event.stream)) or 'no service yet'}.",
            "",
            *fields_table(event.schema),
            *earlier_versions(event.name, event.version),
        ]
    return "\n".join(out) + "\n"


def earlier_versions(name: str, current: int) -> list[str]:
    """Each earlier version's fields, from the schema snapshot (make schema-check)."""
    versions = SNAPSHOT_VERSIONS.get(name, {})
    lines = []
    for version in sorted((int(v) for v in versions if int(v) < current), reverse=True):
        schema = versions[str(version)]
        required = set(schema.get("required", []))
        fields = ", ".join(
            f"`{field}`" + ("" if field in required else " (optional)")
            for field in schema.get("properties", {})
        )
        lines += ["", f"Version {version} had: {fields}."]
    return lines


def stale(path: Path, text: str) -> bool:
    """Whether `path` differs from `text`; if it does, the difference on stderr."""
    current = path.read_text() if path.exists() else ""
    if current == text:
        return False
    name = path.relative_to(ROOT)
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        text.splitlines(keepends=True),
        f"{name} (committed)",
        f"{name} (from the code)",
    )
    sys.stderr.writelines(diff)
    state = "out of date with" if path.exists() else "missing; it is generated from"
    print(
        f"{name} is {state} the event registry and the roster:"
        " run `make catalog` and commit the result",
        file=sys.stderr,
    )
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write docs/events.md from the event registry.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    files = {CATALOG: render()}
    if README.exists():
        files[README] = readme_with_diagram(README.read_text())
    if args.check:
        out_of_date = [path for path, text in files.items() if stale(path, text)]
        if out_of_date:
            return 1
        print(f"{', '.join(str(p.relative_to(ROOT)) for p in files)}: up to date")
        return 0
    CATALOG.parent.mkdir(exist_ok=True)
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0
