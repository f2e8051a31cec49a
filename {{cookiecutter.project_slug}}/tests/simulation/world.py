"""The simulated system: the real services, each on a database of its own, around one broker.

Every service of the roster runs as its real FastAPI app (commands go through
httpx.ASGITransport), with its real subscriptions, eventkit's Consumer and OutboxRelay,
and notification's EmailDispatcher with an SMTP server of the simulation's. Nothing runs
in the background: the app's lifespan is never started, so the scheduler (engine.py)
drives each relay round, batch and dispatch itself. On PostgreSQL every service runs two
replicas (two apps on one database); on SQLite, one (a SQLite file is one process's).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import importlib
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import aiosmtplib
import httpx
from fastapi import FastAPI
from pydantic import Field
from sqlalchemy import String, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts import BILLING_EVENTS, EVENTS, ROSTER, USER_EVENTS
from eventkit import (
    Envelope,
    EventData,
    EventRegistry,
    EventType,
    Roster,
    ServiceSettings,
    ServiceSpec,
    Subscriptions,
    create_service,
)
from eventkit.app import migrations_beside
from eventkit.db import Base
from eventkit.kit import ServiceKit
from eventkit.migrations import upgrade_async
from eventkit.settings import default
from eventkit.transports import delivery_from_settings
from notification_service.sender import SmtpSender

from .broker import PublishHook, SimBroker, SimConfig, SimTransport

# Small batches, so a few dozen events make many of them (and mid-batch faults have room).
SIM_SETTINGS: dict[str, Any] = {
    "ADMIN_TOKEN": None,
    "ENVIRONMENT": "development",
    "BROKER": "memory",
    "LOG_LEVEL": "ERROR",
    "TRACES_FILE": None,
    "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    "RELAY_BATCH_SIZE": 4,
    "CONSUMER_BATCH_SIZE": 8,
    "MAX_RETRIES": default("MAX_RETRIES"),
    "RETRY_DELAYS_SECONDS": default("RETRY_DELAYS_SECONDS"),
    "DEAD_LETTER_TOPIC": None,
}
REFUSED_DOMAIN = "refused.example.com"


# --- the event registry a deploy brings: a new version and new types ----------------------


class NameChangedV2(EventData):
    user_id: str
    new_name: str
    reason: str = ""


class LocaleChanged(EventData):
    user_id: str
    locale: str


class InvoiceReminded(EventData):
    invoice_id: str
    user_id: str


def upgraded_registry() -> EventRegistry:
    """The contracts after a deploy: NameChanged v2 (v1 lifted) and two new types."""
    types = [t for t in EVENTS if t.name != "NameChanged"]
    types += [
        EventType("NameChanged", USER_EVENTS, EVENTS["NameChanged"].version + 1, NameChangedV2),
        EventType("LocaleChanged", USER_EVENTS, 1, LocaleChanged),
        EventType("InvoiceReminded", BILLING_EVENTS, 1, InvoiceReminded),
    ]
    registry = EventRegistry(types)
    registry.upcasters.update(EVENTS.upcasters)
    registry.upcasters[("NameChanged", EVENTS["NameChanged"].version)] = lambda data: {
        **data,
        "reason": "",
    }
    return registry


# --- a service added later, as `make service` writes one -----------------------------------

NEWCOMER = "newcomer"


class NewcomerBase(DeclarativeBase):
    """Its own metadata: the project's models stay as its migrations make them."""


class LastEvent(NewcomerBase):
    """`make service`'s read model: the last event of each aggregate and how many there were."""

    __tablename__ = "newcomer_last_events"

    aggregate_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    events: Mapped[int] = mapped_column(default=0)
    last_type: Mapped[str] = mapped_column(String(100))
    last_sequence: Mapped[int | None]


async def remember(session: AsyncSession, envelope: Envelope) -> None:
    """`make service`'s projection, as dev_tools/new_service.py writes it."""
    key = envelope.aggregate_id or envelope.source
    row = await session.get(LastEvent, key)
    if row is None:
        row = LastEvent(aggregate_id=key, events=0)
        session.add(row)
    row.last_type = envelope.type
    row.last_sequence = envelope.sequence
    row.events += 1


def newcomer_subscriptions() -> Subscriptions:
    subscriptions = Subscriptions(read_models=[LastEvent])

    async def on_event(envelope: Envelope, session: AsyncSession) -> None:
        await remember(session, envelope)

    for stream in (USER_EVENTS, BILLING_EVENTS):
        subscriptions.on_message(stream)(on_event)
    return subscriptions


class NewcomerSettings(ServiceSettings):
    SERVICE_NAME: str = NEWCOMER
    PORT: int = Field(8999)


NEWCOMER_ROSTER = Roster(
    services=(
        *ROSTER.services,
        ServiceSpec(NEWCOMER, 8999, subscribes=(USER_EVENTS, BILLING_EVENTS)),
    ),
    events=EVENTS,
)


# --- databases: a migrated template per service, copied for each run ----------------------


class Databases:
    """Fresh databases for a run: SQLite files, or PostgreSQL databases (TEST_POSTGRES_URL)."""

    # (server or "", service) -> its migrated template, made once per process
    _templates: ClassVar[dict[tuple[str, str], str]] = {}

    def __init__(self, postgres_url: str | None) -> None:
        self.postgres_url = postgres_url
        self.folder = Path(tempfile.mkdtemp(prefix="simulation-", dir=scratch()))
        self.made: list[str] = []
        self._admin: AsyncEngine | None = None

    @property
    def admin(self) -> AsyncEngine:
        assert self.postgres_url is not None
        if self._admin is None:
            self._admin = create_async_engine(self.postgres_url, isolation_level="AUTOCOMMIT")
        return self._admin

    def url_of(self, name: str) -> str:
        if self.postgres_url is None:
            return f"sqlite+aiosqlite:///{self.folder / name}.db"
        return self.postgres_url.rsplit("/", 1)[0] + f"/{name}"

    async def new(self, service: str, migrations: Path | None) -> str:
        """A database of `service` at its migrations' head (or eventkit's tables)."""
        name = f"sim_{uuid.UUID(bytes=os.urandom(16)).hex[:12]}_{service}"
        url = self.url_of(name)
        self.made.append(name)
        if migrations is None:
            if self.postgres_url is not None:
                await self._execute(f'CREATE DATABASE "{name}"')
            engine = create_async_engine(url)
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
                await conn.run_sync(NewcomerBase.metadata.create_all)
            await engine.dispose()
            return url
        template = await self._template(service, migrations)
        if self.postgres_url is None:
            shutil.copyfile(template, self.folder / f"{name}.db")
        else:
            await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return url

    async def _template(self, service: str, migrations: Path) -> str:
        key = (self.postgres_url or "", service)
        if key in self._templates:
            return self._templates[key]
        if self.postgres_url is None:
            folder = Path(tempfile.mkdtemp(prefix="simulation-templates-", dir=scratch()))
            atexit.register(shutil.rmtree, folder, True)
            template = str(folder / f"{service}.db")
            await upgrade_async(f"sqlite+aiosqlite:///{template}", migrations)
        else:
            template = f"simtpl_{os.getpid()}_{service}"
            await self._execute(f'DROP DATABASE IF EXISTS "{template}"')
            await self._execute(f'CREATE DATABASE "{template}"')
            await upgrade_async(self.url_of(template), migrations)
            atexit.register(_drop_template, self.postgres_url, template)
        self._templates[key] = template
        return template

    async def _execute(self, statement: str) -> None:
        async with self.admin.connect() as conn:
            await conn.execute(text(statement))

    async def outage(self, name: str, down: bool) -> None:
        """PostgreSQL: refuse connections to database `name` and end those it has."""
        await self._execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not down).lower()}')
        if down:
            await self._execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )

    async def end_leadership(self, name: str) -> None:
        """PostgreSQL: end the connections of database `name` that hold an advisory lock
        (the relay's leadership), as a network partition or a stalled process would."""
        await self._execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d "
            f"ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = '{name}'"
        )

    async def close(self) -> None:
        if self.postgres_url is not None:
            for name in self.made:
                await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await self.admin.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)


def scratch() -> str | None:
    """Where SQLite files go: memory (/dev/shm) where there is one, as a run keeps nothing."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _drop_template(postgres_url: str, template: str) -> None:
    async def drop() -> None:
        engine = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        await engine.dispose()

    with contextlib.suppress(Exception):  # the server went away first: nothing to clean
        asyncio.run(drop())


# --- SMTP --------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """The SMTP server every notification replica sends through, and what it took."""

    clock: Callable[[], float]
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    down_until: float = 0.0
    # The dispatcher dies right after the n-th next email leaves; that email may go twice.
    crash_in: int = 0
    crash_armed: bool = False
    may_repeat: Counter[tuple[str, str]] = field(default_factory=Counter)
    crashes: int = 0

    @property
    def down(self) -> bool:
        return self.clock() < self.down_until


class SimSender(SmtpSender):
    """notification's own SMTP sender, talking to the simulation's SMTP server."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__("smtp.simulation", 25, "notifications@example.com", self.deliver_to)
        self.mailbox = mailbox

    async def deliver_to(self, email: EmailMessage, **_: Any) -> None:
        """What the server does with one email: as aiosmtplib reports it to the sender."""
        from .broker import Crash

        box = self.mailbox
        to, subject = str(email["To"]), str(email["Subject"])
        key = (to, subject)
        if box.down:
            raise aiosmtplib.SMTPConnectError("simulated SMTP outage: connection refused")
        if to.endswith("@" + REFUSED_DOMAIN):
            box.refused[key] += 1
            refusal = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 mailbox unavailable", to)
            raise aiosmtplib.SMTPRecipientsRefused([refusal])
        box.sent[key] += 1
        if box.crash_in:
            box.crash_in -= 1
        if box.crash_in == 0 and box.crash_armed:
            box.crash_armed = False
            box.crashes += 1
            box.may_repeat[key] += 1
            raise Crash(f"the dispatcher died right after sending {subject!r}")


# --- services and their replicas -----------------------------------------------------------


@dataclass(eq=False)
class Replica:
    service: str
    index: int
    app: FastAPI
    transport: SimTransport
    client: httpx.AsyncClient
    dispatcher: Any = None  # notification's EmailDispatcher
    # The replay consumer's own handlers (a reference replay uses them, unwatched).
    replay_subscriptions: Subscriptions | None = None

    @property
    def name(self) -> str:
        return f"{self.service}/{self.index}"

    @property
    def kit(self) -> ServiceKit:
        kit: ServiceKit = self.app.state.kit
        return kit


@dataclass(eq=False)
class Service:
    name: str
    spec: ServiceSpec
    database: str  # its name (a file or a PostgreSQL database)
    url: str
    migrations: Path | None
    replicas: list[Replica] = field(default_factory=list)
    started: bool = True
    outage_hooks: list[Callable[[], None]] = field(default_factory=list)
    db_down_until: float = 0.0
    relay_stalled_until: float = 0.0

    @property
    def consumes(self) -> bool:
        return bool(self.spec.subscribes)


# A handler call the engine watches: (replica, events of the call, replaying?, session).
TapBefore = Callable[[str, str, list[Envelope], bool, AsyncSession], Awaitable[None]]
TapApplied = Callable[[str, list[Envelope], bool], None]


def tapped(
    subscriptions: Subscriptions,
    replica: str,
    service: str,
    replay: bool,
    before: TapBefore,
    applied: TapApplied,
) -> Subscriptions:
    """The same subscriptions, each handler call shown to the engine (which may fail it),
    and each event recorded as applied once its transaction commits."""
    watched = Subscriptions(read_models=subscriptions.read_models)

    def wrap(handler: Any, batch: bool) -> Any:
        async def call(events: Any, session: AsyncSession) -> None:
            given: list[Envelope] = list(events) if batch else [events]
            await before(replica, service, given, replay, session)
            await handler(events, session)
            pending: dict[str, Envelope] | None = session.info.get("simulation")
            if pending is None:
                pending = session.info["simulation"] = {}

                def committed(_: Any) -> None:
                    applied(service, list(pending.values()), replay)

                event.listen(session.sync_session, "after_commit", committed, once=True)
            for envelope in given:
                pending[str(envelope.id)] = envelope

        return call

    for subscription in subscriptions.subscriptions:
        watched.subscriptions.append(
            dataclasses.replace(
                subscription, handler=wrap(subscription.handler, subscription.batch)
            )
        )
    return watched


def settings_for(service: str, url: str) -> ServiceSettings:
    if service == NEWCOMER:
        return NewcomerSettings(DATABASE_URL=url, **SIM_SETTINGS)
    module = importlib.import_module(f"{service}_service.settings")
    settings: ServiceSettings = module.Settings(DATABASE_URL=url, **SIM_SETTINGS)
    return settings


def build_app(
    service: str, settings: ServiceSettings, transport: SimTransport, mailbox: Mailbox
) -> FastAPI:
    if service == NEWCOMER:
        return create_service(
            settings, NEWCOMER_ROSTER, [], newcomer_subscriptions(), transport=transport
        )
    module = importlib.import_module(f"{service}_service.main")
    if service == "notification":
        app: FastAPI = module.create_app(settings, transport=transport, sender=SimSender(mailbox))
    else:
        app = module.create_app(settings, transport=transport)
    return app


async def build_service(
    spec: ServiceSpec,
    databases: Databases,
    broker: SimBroker,
    mailbox: Mailbox,
    replicas: int,
    on_publish: PublishHook,
    before: TapBefore,
    applied: TapApplied,
    feeds: httpx.AsyncBaseTransport,
    *,
    started: bool = True,
) -> Service:
    probe = settings_for(spec.name, "sqlite://")
    migrations = None if spec.name == NEWCOMER else migrations_beside(probe)
    url = await databases.new(spec.name, migrations)
    service = Service(
        spec.name, spec, url.rsplit("/", 1)[1].removesuffix(".db"), url, migrations, started=started
    )
    for index in range(replicas):
        settings = settings_for(spec.name, url)
        name = f"{spec.name}/{index}"
        config = SimConfig(service=spec.name, **delivery_from_settings(settings))
        transport = SimTransport(broker, spec.name, name, config, on_publish)
        app = build_app(spec.name, settings, transport, mailbox)
        kit: ServiceKit = app.state.kit
        kit.feed_transport = feeds
        if kit.consumer is not None:
            kit.consumer.subscriptions = tapped(
                kit.consumer.subscriptions, name, spec.name, False, before, applied
            )
            kit.consumer.attach()
        replay_subscriptions = None
        if kit.replay_consumer is not None:
            replay_subscriptions = kit.replay_consumer.subscriptions
            kit.replay_consumer.subscriptions = tapped(
                kit.replay_consumer.subscriptions, name, spec.name, True, before, applied
            )
        dispatcher: Any = next((w for w in kit.workers if hasattr(w, "send_pending")), None)
        if dispatcher is not None:
            dispatcher.db = kit.db  # what its start() would do, without its background loop
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url=f"http://{spec.name}-{index}",
            timeout=None,
        )
        service.replicas.append(
            Replica(spec.name, index, app, transport, client, dispatcher, replay_subscriptions)
        )
    return service


def sqlite_outage_hook(engine: AsyncEngine, is_down: Callable[[], bool]) -> None:
    """SQLite: every statement fails while the database is down, as on a failing disk."""
    error = engine.dialect.loaded_dbapi.OperationalError

    def refuse(*_: Any) -> None:
        if is_down():
            raise error("disk I/O error (simulated database outage)")

    event.listen(engine.sync_engine, "before_cursor_execute", refuse)
