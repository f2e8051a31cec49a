"""Add a service to this project: `make service NAME=payments [SUBSCRIBES=user.events,...]`.

    python -m dev_tools service payments --subscribes user.events,billing.events

It checks everything first: a bad or taken name, or a stream the roster does not know, gets
one line on stderr, exit status 2, and nothing written. Then it

1. writes services/<name>/: settings, a read model (the last event seen of each aggregate),
   handlers, a projection, an API, the first migration and a test that passes;
2. adds `ServiceSpec("<name>", <next free port>, subscribes=(...))` to the roster,
   libs/contracts/src/contracts/roster.py;
3. installs the new package into .venv, when there is one (editable, with uv, like `make
   install`; the workspace of the root pyproject.toml takes in services/* by itself, and a
   new service needs no third-party package beyond eventkit's, already in requirements.lock);
4. regenerates what cannot read the roster (dev_tools/deploy_files.py: compose, Kubernetes,
   Prometheus, Postgres init) and the docs that list the services (dev_tools/catalog.py:
   docs/events.md; dev_tools/settings_table.py: README's settings table).

`make install`, `make test`, `make local-up` and ruff find services by their folder.
"""

from __future__ import annotations

import argparse
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
from typing import Any

from dev_tools import ROOT

ROSTER_FILE = ROOT / "libs/contracts/src/contracts/roster.py"
MARKER = "# make service adds new services above this line"
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
        if MARKER not in ROSTER_FILE.read_text():
            raise Refused(
                f"{ROSTER_FILE.relative_to(ROOT)} has lost the line {MARKER!r}; "
                "put it back in ROSTER's services, below the last one"
            )
        constants = {
            value: key
            for key, value in vars(contracts).items()
            if key.isupper() and isinstance(value, str) and value in roster.streams
        }
        return cls(name, roster, streams, constants)

    def render(self, sample: Any) -> dict[str, str]:
        pkg = f"src/{self.name}_service"
        files = {
            "pyproject.toml": PYPROJECT,
            f"{pkg}/__init__.py": INIT,
            f"{pkg}/__main__.py": MAIN_MODULE,
            f"{pkg}/settings.py": SETTINGS,
            f"{pkg}/models.py": MODELS,
            f"{pkg}/projections.py": PROJECTIONS,
            f"{pkg}/handlers.py": HANDLERS + "".join(self.handler(s) for s in self.streams),
            f"{pkg}/api.py": API,
            f"{pkg}/main.py": APP,
            f"{pkg}/migrations/env.py": MIGRATIONS_ENV,
            f"{pkg}/migrations/script.py.mako": MAKO,
            f"{pkg}/migrations/versions/0001_initial_schema.py": FIRST_MIGRATION,
            "tests/test_last_events.py": TEST,
        }
        imported = ", ".join(sorted({self.constants.get(s, "") for s in self.streams} - {""}))
        fill = {
            "@name@": self.name,
            "@dist@": distribution_prefix(),
            "@Owner@": self.name.capitalize() + ("'" if self.name.endswith("s") else "'s"),
            "@streams@": ", ".join(self.streams),
            "@stream_imports@\n": f"from contracts import {imported}\n" if imported else "",
            "@sample_type@": sample.name,
            "@sample_data@": sample_data(sample.schema),
        }
        for path, text in files.items():
            for key, value in fill.items():
                text = text.replace(key, value)
            files[path] = text if path.endswith(".mako") else sort_imports(text)
        return files

    def handler(self, stream: str) -> str:
        subject = self.constants.get(stream, f'"{stream}"')
        return HANDLER.replace("@stream@", subject).replace(
            "@fn@", "on_" + re.sub(r"\W", "_", stream)
        )

    def roster_entry(self) -> tuple[str, str]:
        """The roster file with the new entry above the marker, and the entry."""
        text = self.roster_before
        names = []
        for stream in self.streams:
            const = self.constants.get(stream)
            imports = re.search(r"^from contracts(?:\.events)? import (.+)$", text, re.M)
            if const and imports and const not in imports[1].split(", "):
                more = ", ".join(sorted([*imports[1].split(", "), const]))
                line = imports[0].replace(imports[1], more)
                if len(line) > 100:
                    const = None
                else:
                    text = text[: imports.start()] + line + text[imports.end() :]
            elif const and not imports:
                const = None
            names.append(const or f'"{stream}"')
        tuple_ = ", ".join(names) + ("," if len(names) == 1 else "")
        at = text.index(MARKER)
        indent = text[text.rindex("\n", 0, at) + 1 : at]
        entry = f'ServiceSpec("{self.name}", {self.port}, subscribes=({tuple_}))'
        written = entry
        if len(indent) + len(entry) + 1 > 100:  # as ruff format would wrap it
            inner = indent + "    "
            written = (
                f'ServiceSpec(\n{inner}"{self.name}",\n{inner}{self.port},\n'
                f"{inner}subscribes=({tuple_}),\n{indent})"
            )
        return text[:at] + f"{written},\n{indent}" + text[at:], entry

    def write(self) -> None:
        try:
            for relative, content in self.files.items():
                path = self.folder / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
            ROSTER_FILE.write_text(self.roster_after)
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
                "regenerating the README's settings table",
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


FIRST_PARTY = re.compile(r"^(?:import|from) (?:eventkit|contracts|\w+_service)\b")


def sort_imports(text: str) -> str:
    """Order each run of first-party imports as ruff does: `import` first, then by module."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and FIRST_PARTY.match(lines[j]):
            j += 1
        lines[i:j] = sorted(lines[i:j], key=lambda line: (line.startswith("from"), line.split()[1]))
        i = j + 1
    return "\n".join(lines)


SAMPLES: dict[Any, str] = {
    int: "1",
    float: "1.5",
    bool: "True",
    Decimal: '"12.50"',
    datetime: '"2024-01-01T00:00:00Z"',
    date: '"2024-01-01"',
}


def sample_data(schema: Any) -> str:
    """A `data` that `schema` accepts, as Python source that ruff format leaves alone."""
    fields = [
        f'    "{field}": {SAMPLES.get(info.annotation, json.dumps(f"{field}-1"))},'
        for field, info in schema.model_fields.items()
    ]
    return "{\n" + "\n".join(fields) + "\n}"


def say(line: str) -> None:
    print(f"make service: {line}", flush=True)


# --- the new service's files; @name@ and the like are filled in by Plan.fill ---------------

PYPROJECT = """\
[project]
name = "@dist@-@name@"
version = "0.1.0"
description = "The last event seen of each aggregate of @streams@ (from make service)."
requires-python = ">=3.11"
dependencies = ["@dist@-eventkit", "@dist@-contracts"]

[build-system]
# uv builds it itself and fetches nothing for that (make install, the Dockerfile).
requires = ["uv_build>=0.13.9,<0.14"]
build-backend = "uv_build"

[tool.uv.build-backend]
# The import name; every file of its folder under src/ ships (migrations/script.py.mako too).
module-name = "@name@_service"
"""

INIT = '''\
"""The @name@ service: the last event seen of each aggregate."""
'''

MAIN_MODULE = """\
from @name@_service.main import create_app
from @name@_service.settings import Settings
from eventkit.runner import serve

serve(create_app, Settings)
"""

SETTINGS = """\
from contracts import ROSTER
from eventkit import ServiceSettings

SERVICE = "@name@"


class Settings(ServiceSettings):
    SERVICE_NAME: str = SERVICE
    PORT: int = ROSTER.service(SERVICE).port
"""

MODELS = '''\
"""@Owner@ read model: the last event seen of each aggregate.

It counts the events applied to each aggregate too. A starting point: change it to the
tables this service needs, and its first migration with it (a new service has no history
to keep). Later changes are new migrations:

    make migration SERVICE=@name@ MESSAGE="what changed"
"""

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class LastEvent(Base):
    __tablename__ = "@name@_last_events"

    aggregate_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    events: Mapped[int] = mapped_column(default=0)
    last_type: Mapped[str] = mapped_column(String(100))
    last_sequence: Mapped[int | None]
'''

PROJECTIONS = '''\
"""How an event changes the read model of the @name@ service.

eventkit hands over each aggregate's events once each and in their order (`sequence`),
in the transaction that records them in the inbox: a handler only has to apply them. An
event without an aggregate id (from outside the system) counts under its source.
"""

from sqlalchemy.ext.asyncio import AsyncSession

from @name@_service.models import LastEvent
from eventkit import Envelope


async def remember(session: AsyncSession, event: Envelope) -> None:
    key = event.aggregate_id or event.source
    row = await session.get(LastEvent, key)
    if row is None:
        row = LastEvent(aggregate_id=key, events=0)
        session.add(row)
    row.last_type = event.type
    row.last_sequence = event.sequence
    row.events += 1
'''

HANDLERS = '''\
"""@Owner@ subscribers: every event they take goes to the read model."""

from sqlalchemy.ext.asyncio import AsyncSession

@stream_imports@
from @name@_service import projections
from @name@_service.models import LastEvent
from eventkit import Envelope, Subscriptions

subscriptions = Subscriptions(read_models=[LastEvent])
'''

HANDLER = """

@subscriptions.on_message(@stream@)
async def @fn@(event: Envelope, session: AsyncSession) -> None:
    await projections.remember(session, event)
"""

API = '''\
"""@Owner@ HTTP routes: its read model, one aggregate at a time."""

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict

from @name@_service.models import LastEvent
from eventkit import Kit
from eventkit.deps import READ_MODEL
from eventkit.inputs import IdInPath

# READ_MODEL: 503 with the reason while a rebuild runs or after one failed.
router = APIRouter(tags=["@name@"], dependencies=[READ_MODEL])


class LastEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    aggregate_id: str
    events: int
    last_type: str
    last_sequence: int | None


@router.get("/aggregates/{aggregate_id}", response_model=LastEventOut)
async def last_event(aggregate_id: IdInPath, kit: Kit) -> LastEventOut:
    async with kit.db.sessions() as session:
        row = await session.get(LastEvent, aggregate_id)
    if row is None:
        raise HTTPException(404, f"no event of aggregate {aggregate_id} seen yet")
    return LastEventOut.model_validate(row)
'''

APP = '''\
"""@Owner@ app: its routes, its subscribers and its read model."""

from fastapi import FastAPI

from @name@_service.api import router
from @name@_service.handlers import subscriptions
from @name@_service.settings import Settings
from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    """The service; its tests pass a database and a transport of their own."""
    settings = settings or Settings()
    return create_service(settings, ROSTER, [router], subscriptions, transport=transport)
'''

MIGRATIONS_ENV = '''\
"""@Owner@ Alembic environment: its models, migrated by eventkit."""

import @name@_service.models  # noqa: F401  (registers the tables)
from eventkit.migrations import run_env

run_env()
'''

FIRST_MIGRATION = '''\
"""@Owner@ read model: the last event seen of each aggregate.

The first revision of the service's own branch. eventkit's tables (outbox, inbox, dead
letters) come from eventkit's branch.
"""

import sqlalchemy as sa
from alembic import op

revision = "@name@_0001"
down_revision = None
branch_labels = ("@name@",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "@name@_last_events",
        sa.Column("aggregate_id", sa.String(length=100), primary_key=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("last_type", sa.String(length=100), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("@name@_last_events")
'''

TEST = '''\
"""@Owner@ read model, fed events through this project's broker adapter (the root
conftest's `app` and `transport`, under FastStream's test broker)."""

import httpx

from contracts.testing import deliver
from eventkit import Envelope, new_event
from eventkit.transports import Transport

DATA = @sample_data@


def event(sequence: int) -> Envelope:
    return new_event(
        "@sample_type@",
        DATA,
        source="test",
        aggregate_id="a1",
        sequence=sequence,
    )


async def test_the_last_event_of_an_aggregate_is_kept(
    client: httpx.AsyncClient, transport: Transport
) -> None:
    first, second = event(1), event(2)
    await deliver(transport, first)
    await deliver(transport, first)  # redelivered: the inbox drops it
    await deliver(transport, second)
    await deliver(transport, event(1))  # older than the aggregate's position: skipped
    assert (await client.get("/aggregates/a1")).json() == {
        "aggregate_id": "a1",
        "events": 2,
        "last_type": "@sample_type@",
        "last_sequence": 2,
    }


async def test_an_aggregate_never_seen_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/aggregates/nobody")).status_code == 404
'''

MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: Union[str, Sequence[str], None] = ${repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade schema."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade schema."""
    ${downgrades if downgrades else "pass"}
'''
