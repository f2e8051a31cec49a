"""Add a service to this project: `make service NAME=payments [SUBSCRIBES=user.events,...]`.

    python -m dev_tools service payments --subscribes user.events,billing.events

It checks everything first: a bad or taken name, or a stream the roster does not know, gets
one line on stderr, exit status 2, and nothing written. Then it

1. writes services/<name>/ from the skeleton beside this file (service_skeleton/, Jinja
   templates): settings, a read model (the last event seen of each aggregate), handlers, a
   projection, an API, the first migration and a test that passes; ruff then sorts its
   imports and formats it, as `make format` would;
2. adds `ServiceSpec("<name>", <next free port>, subscribes=(...))` to the roster,
   libs/contracts/src/contracts/roster.py, where its parse tree says the services end;
3. installs the new package into .venv, when there is one (editable, with uv, like `make
   install`; the workspace of the root pyproject.toml takes in services/* by itself, and a
   new service needs no third-party package beyond eventkit's, already in requirements.lock);
4. regenerates what cannot read the roster (dev_tools/deploy_files.py: compose, Kubernetes,
   Prometheus, Postgres init) and the docs that list the services (dev_tools/catalog.py:
   docs/events.md; dev_tools/settings_table.py: docs/settings.md).

`make install`, `make test`, `make local-up` and ruff find services by their folder.
"""

from __future__ import annotations

import argparse
import ast
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tomllib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from dev_tools import ROOT

ROSTER_FILE = ROOT / "libs/contracts/src/contracts/roster.py"
SKELETON = Path(__file__).resolve().parent / "service_skeleton"
DEFAULT_SUBSCRIBES = "user.events"
NAME_FORM = re.compile(r"[a-z][a-z0-9]{0,29}")
# Names that would stand for something else. Besides these: a container of
# docker-compose.yml, and a setting of its own named `<NAME>_URL` (BROKER_URL, DATABASE_URL).
RESERVED = {
    "contracts": "the libs/contracts package",
    "eventkit": "the libs/eventkit package",
    "libs": "the libs/ folder",
    "tools": "the tools/ folder",
    "services": "the services/ folder",
    "tests": "the tests/ folder",
    "infra": "the infra/ folder",
    "docs": "the docs/ folder",
    "broker": "local-up's broker process",
}


class Refused(Exception):
    """A reason to change nothing, said in one line."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("--subscribes", default="", help=f"default: {DEFAULT_SUBSCRIBES}")
    args = parser.parse_args(argv)
    try:
        plan = Plan.check(args.name.strip(), args.subscribes)
    except Refused as reason:
        print(f"make service: {reason}", file=sys.stderr)
        return 2
    plan.write()
    return plan.follow_up()


class Plan:
    """Everything `make service` writes, worked out before anything is written."""

    def __init__(self, name: str, roster: Any, streams: list[str], constants: dict[str, str]):
        self.name = name
        self.port = max(spec.port for spec in roster.services) + 1
        self.streams = streams
        self.constants = constants  # stream -> the name `contracts` exports it under
        self.folder = ROOT / "services" / name
        self.roster_before = ROSTER_FILE.read_text()
        self.roster_after, self.entry = self.roster_entry()
        types = roster.events.of_stream(streams[0])
        if not types:
            raise Refused(f"{streams[0]} has no event types in libs/contracts to test with")
        self.files = self.render(types[0])

    @classmethod
    def check(cls, name: str, subscribes: str) -> Plan:
        roster, contracts = load_contracts()
        check_name(name, roster.names)
        streams = [s.strip() for s in (subscribes or DEFAULT_SUBSCRIBES).split(",")]
        streams = list(dict.fromkeys(s for s in streams if s)) or [DEFAULT_SUBSCRIBES]
        for stream in streams:
            if stream not in roster.streams:
                raise Refused(
                    f"SUBSCRIBES names {stream!r}, which no service publishes; "
                    f"the roster's streams are {', '.join(roster.streams)}"
                )
        constants = {
            value: key
            for key, value in vars(contracts).items()
            if key.isupper() and isinstance(value, str) and value in roster.streams
        }
        return cls(name, roster, streams, constants)

    def render(self, sample: Any) -> dict[str, str]:
        """The skeleton's files, filled in: a `.jinja` file is rendered, any other copied;
        the folder `package` is the service's Python package."""
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(SKELETON),
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )
        values = {
            "name": self.name,
            "dist": distribution_prefix(),
            "owner": self.name.capitalize() + ("'" if self.name.endswith("s") else "'s"),
            "streams": ", ".join(self.streams),
            "stream_constants": sorted(self.stream_constants()),
            "handlers": [
                {
                    "stream": self.stream_in_code(stream),
                    "function": "on_" + re.sub(r"\W", "_", stream),
                }
                for stream in self.streams
            ],
            "sample_type": sample.name,
            "sample_data": sample_data(sample.schema),
        }
        files = {}
        for path in sorted(p for p in SKELETON.rglob("*") if p.is_file()):
            parts = path.relative_to(SKELETON).parts
            relative = "/".join(f"{self.name}_service" if p == "package" else p for p in parts)
            if path.suffix == ".jinja":
                template = env.get_template(path.relative_to(SKELETON).as_posix())
                files[relative.removesuffix(".jinja")] = template.render(values)
            else:
                files[relative] = path.read_text()
        return files

    def roster_entry(self) -> tuple[str, str]:
        """The roster file with the new entry after the last service (ruff formats it
        afterwards), and the entry. The stream constants it names are imported there."""
        text = self.roster_before
        tree = ast.parse(text)
        services = [
            argument.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Roster"
            for argument in node.keywords
            if argument.arg == "services"
        ]
        if len(services) != 1 or not isinstance(services[0], ast.Tuple | ast.List):
            raise Refused(
                f"{ROSTER_FILE.relative_to(ROOT)} has no `Roster(services=(...))` to add to"
            )
        last = services[0].elts[-1]
        own = [
            node
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module in ("contracts", "contracts.events")
        ]
        imported = {alias.name for node in own for alias in node.names}
        missing = sorted(self.stream_constants() - imported)
        names = [self.stream_in_code(stream) for stream in self.streams]
        tuple_ = ", ".join(names) + ("," if len(names) == 1 else "")
        entry = f'ServiceSpec("{self.name}", {self.port}, subscribes=({tuple_}))'
        at = offset(text, last.end_lineno or 0, last.end_col_offset or 0)
        text = f"{text[:at]}, {entry}{text[at:]}"
        if missing:  # ruff's import sorting puts it in its place
            first = tree.body[0]
            docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            at = offset(text, (first.end_lineno or 0) + 1, 0) if docstring else 0
            module = own[0].module if own else "contracts.events"
            text = f"{text[:at]}\nfrom {module} import {', '.join(missing)}\n{text[at:]}"
        return text, entry

    def stream_in_code(self, stream: str) -> str:
        """How the new code names `stream`: its `contracts` constant, else the string."""
        return self.constants.get(stream, json.dumps(stream))

    def stream_constants(self) -> set[str]:
        """The names `contracts` exports the subscribed streams under (where it does)."""
        return {self.constants[s] for s in self.streams if s in self.constants}

    def write(self) -> None:
        try:
            for relative, content in self.files.items():
                path = self.folder / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
            ROSTER_FILE.write_text(self.roster_after)
            tidy(self.folder, ROSTER_FILE)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            ROSTER_FILE.write_text(self.roster_before)
            raise
        say(f"wrote services/{self.name}/ ({len(self.files)} files)")
        say(f"added {self.entry} to {ROSTER_FILE.relative_to(ROOT)}")

    def follow_up(self) -> int:
        """What follows from the new roster entry; the service itself is in place by now."""
        venv = ROOT / ".venv/bin"
        install = ["pip", "install", "--quiet", "--python", str(venv / "python"), "--no-deps"]
        steps = [  # (what, the file it needs, the command)
            (
                f"installing services/{self.name} into .venv",
                ".venv/bin/uv",
                [str(venv / "uv"), *install, "-e", f"services/{self.name}"],
            ),
            (
                "regenerating compose, Kubernetes, Prometheus and Postgres init from the roster",
                "tools/src/dev_tools/deploy_files.py",
                [sys.executable, "-m", "dev_tools", "deploy-files"],
            ),
            (
                "regenerating the event catalog, docs/events.md",
                "tools/src/dev_tools/catalog.py",
                [sys.executable, "-m", "dev_tools", "catalog"],
            ),
            (
                "regenerating docs/settings.md, the settings table",
                "tools/src/dev_tools/settings_table.py",
                [sys.executable, "-m", "dev_tools", "settings-table"],
            ),
        ]
        # The tools import every service of the roster, installed or not.
        src = [str(self.folder / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = os.environ | {"PYTHONPATH": os.pathsep.join(src)}
        failed = []
        for what, needs, cmd in steps:
            if not (ROOT / needs).exists():
                say(f"skipped {what}: there is no {needs}")
                continue
            say(what)
            if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
                failed.append(" ".join(cmd[1:]))
        if failed:
            print(
                f"make service: {self.name} is written and in the roster, but this failed: "
                f"{'; '.join(failed)}. Fix what it said and run it again.",
                file=sys.stderr,
            )
            return 1
        say(
            f"{self.name} is in place on port {self.port}: `make test` runs its tests and "
            '`make local-up` starts it (README, "Add a service", says what to change next)'
        )
        say(f"what {self.name} sees of the past: {past_seen()}")
        say(
            f"`make rebuild SERVICE={self.name}` fills its read model from the publishers' "
            "whole event feeds; the first event it sees of an older aggregate (a user signed "
            "up before) opens that aggregate's order, so its later events are applied"
        )
        return 0


def past_seen() -> str:
    """What a new consumer gets of earlier events depends on the broker: its module says."""
    from dev_tools.local import local_broker

    past: str = local_broker().PAST_SEEN
    return past


def check_name(name: str, taken: list[str]) -> None:
    allowed = (
        "a service name is a lowercase letter then up to 29 lowercase letters or digits, "
        "no '_' or '-' (it also names a host and Kubernetes objects)"
    )
    if not name:
        raise Refused(f"NAME is missing ({allowed}): make service NAME=payments")
    if not NAME_FORM.fullmatch(name):
        raise Refused(f"NAME {name!r} is not allowed: {allowed}; e.g. payments")
    if keyword.iskeyword(name):
        raise Refused(f"NAME {name!r} is a Python keyword: pick a name that is not one")
    if name in taken:
        raise Refused(f"NAME {name!r} is taken: the roster has {', '.join(taken)}")
    if (ROOT / "services" / name).exists():
        raise Refused(f"NAME {name!r} is taken: services/{name}/ exists, though not in the roster")
    clash = RESERVED.get(name) or other_uses(name)
    if clash:
        raise Refused(f"NAME {name!r} would clash with {clash}: pick another name")


def other_uses(name: str) -> str | None:
    """What else in the project goes by `name`: a setting or a compose container."""
    from eventkit.settings import ServiceSettings

    setting = f"{name.upper()}_URL"
    if setting in ServiceSettings.model_fields:
        return f"the {setting} setting"
    compose = ROOT / "docker-compose.yml"
    text = compose.read_text() if compose.exists() else ""
    services = re.search(r"^services:\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    if services and re.search(rf"^  {name}:", services[1], re.M):
        return f"the {name!r} container of docker-compose.yml"
    return None


def distribution_prefix() -> str:
    """`<slug>` of the project's own distribution names (`<slug>-eventkit`, `<slug>-user`):
    names of its own, so that no install takes a stranger's package from an index."""
    eventkit = tomllib.loads((ROOT / "libs/eventkit/pyproject.toml").read_text())
    return str(eventkit["project"]["name"]).removesuffix("-eventkit")


def load_contracts() -> tuple[Any, Any]:
    """The roster as it stands in this tree, and the `contracts` package around it."""
    sys.dont_write_bytecode = True  # a refusal leaves no trace, not even __pycache__
    for lib in ("libs/eventkit/src", "libs/contracts/src"):
        if str(ROOT / lib) not in sys.path:
            sys.path.insert(0, str(ROOT / lib))
    try:
        import contracts
    except ImportError as exc:
        raise Refused(f"cannot read the roster ({exc}): run `make install` first") from exc
    return contracts.ROSTER, contracts


SAMPLES: dict[Any, str] = {
    int: "1",
    float: "1.5",
    bool: "True",
    Decimal: '"12.50"',
    datetime: '"2024-01-01T00:00:00Z"',
    date: '"2024-01-01"',
}


def sample_data(schema: Any) -> str:
    """A `data` that `schema` accepts, as Python source (ruff formats it)."""
    fields = [
        f'"{field}": {SAMPLES.get(info.annotation, json.dumps(f"{field}-1"))},'
        for field, info in schema.model_fields.items()
    ]
    return "{" + " ".join(fields) + "}"


def offset(text: str, line: int, column: int) -> int:
    """The index in `text` of a parse tree's (line, column): lines count from 1."""
    lines = text.splitlines(keepends=True)
    before = sum(len(row) for row in lines[: line - 1])
    if line > len(lines):
        return before
    return before + len(lines[line - 1].encode()[:column].decode())  # columns count bytes


def tidy(folder: Path, roster: Path) -> None:
    """What `make format` does, on what was written: ruff's fixes (import order first) and
    its formatting; on the roster, only import order and formatting."""
    ruff = [sys.executable, "-m", "ruff"]
    for command in (
        [*ruff, "check", "--fix", "--quiet", str(folder)],
        [*ruff, "check", "--fix", "--quiet", "--select", "I", str(roster)],
        [*ruff, "format", "--quiet", str(folder), str(roster)],
    ):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:])} failed: {result.stdout}{result.stderr}")


def say(line: str) -> None:
    print(f"make service: {line}", flush=True)
