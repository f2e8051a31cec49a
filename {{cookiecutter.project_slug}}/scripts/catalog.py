"""Write docs/events.md, the event catalog, from the code that defines the events.

    python scripts/catalog.py           write docs/events.md           (make catalog)
    python scripts/catalog.py --check   exit 1 if docs/events.md is out of date (make test does)

Event types, versions, fields and streams come from the registry in
libs/eventkit/src/eventkit/events.py; producers from its PRODUCERS; subscribers from each
service's app as it is wired (`create_app()` of services/<name>/src/<name>_service/main.py),
so a new service under services/ shows up here once it subscribes to something.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
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

from eventkit.bus import InProcessTransport
from eventkit.envelope import Envelope
from eventkit.events import PRODUCERS, REGISTRY, STREAMS, UPCASTERS

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "docs" / "events.md"
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


def services() -> list[str]:
    """Every service of the project: a folder under services/ with a `<name>_service` app."""
    for src in sorted(ROOT.glob("services/*/src")):  # importable before `make install` too
        if str(src) not in sys.path:
            sys.path.append(str(src))
    return sorted(
        main.parent.name.removesuffix("_service")
        for main in ROOT.glob("services/*/src/*_service/main.py")
    )


def subscriptions(service: str) -> list[str]:
    """The streams `service` subscribes to, read from its app as `create_app()` wires it."""
    main = importlib.import_module(f"{service}_service.main")
    settings = importlib.import_module(f"{service}_service.settings")
    # In-memory database and transport: building the app connects to nothing.
    config = settings.Settings(DATABASE_URL="sqlite+aiosqlite://", ENVIRONMENT="development")
    app = main.create_app(config, transport=InProcessTransport())
    pipeline = app.state.kit.pipeline
    return [] if pipeline is None else list(pipeline.consumer.handlers)


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


def render() -> str:
    subscribed = {service: subscriptions(service) for service in services()}
    subscribers = {
        stream: [s for s, streams in subscribed.items() if stream in streams] for stream in STREAMS
    }
    out = [
        "# Event catalog",
        "",
        "<!-- Written by scripts/catalog.py: do not edit; run `make catalog`. -->",
        "",
        "Generated from the event registry (`libs/eventkit/src/eventkit/events.py`) and the",
        "streams each service's app subscribes to. Run `make catalog` after changing either;",
        "`make test` fails while this file is out of date.",
        "",
        "## Streams",
        "",
        "Each stream has one producer. A subscriber receives every event of the stream and",
        "ignores the types it has no use for.",
        "",
        "| stream | producer | subscribers | events |",
        "| --- | --- | --- | --- |",
    ]
    for stream in STREAMS:
        events = [t.name for t in REGISTRY.values() if t.stream == stream]
        producer = PRODUCERS.get(stream, NONE)
        readers = ", ".join(subscribers[stream]) or NONE
        out.append(f"| `{stream}` | {producer} | {readers} | {codes(events)} |")
    out += [
        "",
        "## Services",
        "",
        "A subscriber parks an event it cannot apply in its dead letters, `dlq.<service>`.",
        "",
        "| service | publishes | subscribes to | dead letters |",
        "| --- | --- | --- | --- |",
    ]
    for service, streams in subscribed.items():
        published = [stream for stream, producer in PRODUCERS.items() if producer == service]
        dlq = f"`dlq.{service}`" if streams else NONE
        out.append(f"| {service} | {codes(published)} | {codes(streams)} | {dlq} |")
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
    for event in REGISTRY.values():
        older = sorted(v for (name, v) in UPCASTERS if name == event.name)
        upcast = f"; versions {', '.join(map(str, older))} are upcast to it" if older else ""
        out += [
            "",
            f"### {event.name}",
            "",
            f"Version {event.version}{upcast}. Stream `{event.stream}`, produced by "
            f"{PRODUCERS.get(event.stream, NONE)}, received by "
            f"{', '.join(subscribers[event.stream]) or 'no service yet'}.",
            "",
            *fields_table(event.schema),
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write docs/events.md from the event registry.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    current = CATALOG.read_text() if CATALOG.exists() else ""
    if args.check:
        if current == text:
            print(f"{CATALOG.relative_to(ROOT)} is up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"{CATALOG.relative_to(ROOT)} (committed)",
            f"{CATALOG.relative_to(ROOT)} (from the code)",
        )
        sys.stderr.writelines(diff)
        state = "out of date with" if CATALOG.exists() else "missing; it is generated from"
        print(
            f"{CATALOG.relative_to(ROOT)} is {state} the event registry and the services'"
            " subscriptions: run `make catalog` and commit the result",
            file=sys.stderr,
        )
        return 1
    CATALOG.parent.mkdir(exist_ok=True)
    CATALOG.write_text(text)
    print(f"wrote {CATALOG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
