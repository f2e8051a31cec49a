"""One seeded run of the whole pipeline: the scheduler, the faults, the settling, the checks.

A run is a function of its seed and its fault list. The seed draws the commands (sign-ups,
name and email changes, deactivations, invoices) and, step by step, what the scheduler
does next: a command, a relay round, a batch fetched or applied, a round of emails, a
step of a rebuild. The faults strike at their steps. Nothing else runs: no background
loop, no timer (retries are due on the simulated clock), so a seed replays exactly.

After the last step the system settles: every fault ends, every rebuild finishes (a
failed one is run again, as an operator would), every relay, batch and email goes
through and every retry falls due. Then the invariants are checked (INVARIANTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import BILLING_EVENTS, ROSTER, USER_EVENTS
from eventkit import Envelope, add_to_outbox, clock, new_event
from eventkit.consumer import Consumer
from eventkit.db import Database
from eventkit.outbox import OutboxMessage
from eventkit.pause import ConsumerPause

from .broker import Batch, Crash, PublishPlan, SimConfig, SimTransport, identify, model
from .faults import KINDS, POISON_KINDS, Fault, Setting
from .world import (
    NEWCOMER,
    NEWCOMER_ROSTER,
    REFUSED_DOMAIN,
    SIM_SETTINGS,
    Databases,
    LastEvent,
    Mailbox,
    Replica,
    Service,
    build_service,
    sqlite_outage_hook,
    tapped,
    upgraded_registry,
)

STEPS = 110
FEED_PAGE = 4  # events per page of a feed during a rebuild, so a rebuild has many pages
SETTLE_ROUNDS = 60
SETTLE_BATCHES = 300  # per round: a batch redelivered for ever shows as a run that never settles

INVARIANTS = {
    "settles": "with the faults over, every event is delivered and every retry ends",
    "every event is published": "each event in a store or outbox reached the broker",
    "read model equals a replay": "each read model equals a fresh consumer fed the stores",
    "per-aggregate order, once": "each aggregate's events apply in sequence order, each once",
    "dead letters are poison": "nothing is dead-lettered but what was poison by construction",
    "every email is sent": "every email an accepted event calls for is sent (or refused)",
    "an email goes once": "no email is sent twice, but the one a crash hit between send and mark",
    "a failed rebuild answers 503": "after a rebuild fails, the read routes answer 503",
    "one rebuild at a time": "two rebuilds of one read model never both run to success",
    "a relay publishes only while it leads": "a relay that lost its lock publishes no more",
    "a replay reaches only its service": "replaying dead letters reaches their service alone",
    "a late service sees a whole suffix": "a service added later applies, per aggregate, "
    "every event from the first it could see to the last",
}

current_rebuild: contextvars.ContextVar[RebuildRun | None] = contextvars.ContextVar(
    "current_rebuild", default=None
)


@dataclass
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


@dataclass
class RunResult:
    seed: int
    setting: Setting
    faults: list[Fault]
    violations: list[Violation]
    struck: Counter[str]  # fault kinds that struck, how often
    stats: Counter[str]
    seconds: float
    draw: tuple[str, ...] = ()  # the options its fault list was drawn with (--known skip)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def boundaries(self) -> set[str]:
        return {KINDS[kind].boundary for kind in self.struck}


@dataclass
class Command:
    kind: str  # signup, rename, email, deactivate, invoice, locale, remind
    ref: int  # which user or invoice, among those accepted so far
    cents: int = 0


def draw_commands(seed: int, count: int) -> list[Command]:
    rng = random.Random(f"{seed}:commands")
    kinds = ["signup", "rename", "email", "deactivate", "invoice", "locale", "remind"]
    weights = [30, 10, 14, 5, 25, 6, 6]
    commands = [Command("signup", 0)]
    while len(commands) < count:
        kind = rng.choices(kinds, weights)[0]
        commands.append(Command(kind, rng.randrange(1 << 30), rng.randint(100, 99_999)))
    return commands


@dataclass(eq=False)
class RebuildRun:
    """A rebuild request in flight; it stops at each feed request until the scheduler lets
    it go on, so events flow between its pages."""

    service: str
    replica: Replica
    fail_at: int | None
    started: int  # the step it started at
    go: asyncio.Event = field(default_factory=asyncio.Event)
    parked: asyncio.Event = field(default_factory=asyncio.Event)
    through: bool = False  # settling: no more stops
    requests: int = 0
    task: asyncio.Task[httpx.Response] | None = None
    began: int = 0  # moments (a counter of rebuild starts and ends) of its start and end
    ended: int | None = None
    status: int | None = None

    async def stop_here(self) -> None:
        if self.through:
            return
        self.go.clear()
        self.parked.set()
        await self.go.wait()


class FeedTransport(httpx.AsyncBaseTransport):
    """How a rebuild reads the publishers' feeds: in process, a small page at a time, each
    request a point where the scheduler may run other steps (or fail the request)."""

    def __init__(self, run: Run) -> None:
        self.run = run

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.run.feed_request(request)


class Run:
    def __init__(
        self,
        seed: int,
        setting: Setting,
        faults: Sequence[Fault],
        databases: Databases,
        steps: int = STEPS,
    ) -> None:
        self.seed = seed
        self.setting = setting
        self.faults = list(faults)
        self.steps = steps
        self.databases = databases
        self.now = 0.0
        self.broker = model(setting.broker)(lambda: self.now)
        self.mailbox = Mailbox(lambda: self.now)
        self.services: dict[str, Service] = {}
        self.commands = draw_commands(seed, steps)
        self.next_command = 0
        self.users: list[str] = []
        self.invoices: list[tuple[str, str]] = []
        self.reminded: set[str] = set()
        self.serial = 0
        self.violations: list[Violation] = []
        self.struck: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.armed: Counter[tuple[str, str]] = Counter()  # (kind, service)
        self.params: dict[tuple[str, str], dict[str, Any]] = {}
        self.crash_at_call: dict[str, int] = {}  # replica -> handler call that dies
        self.calls: Counter[str] = Counter()
        self.rebuilds: list[RebuildRun] = []
        self.moment = 0
        self.failed_rebuild: set[str] = set()
        # relays that lost their lock in the running round, with the lock's lost connection
        self.lost_lead: dict[str, object] = {}
        self.registry = ROSTER.events
        self.publisher_upgraded = False
        self.new_types = False
        self.consumers_follow_at: float | None = None
        self.order: dict[tuple[str, str], list[int]] = {}  # (service, aggregate) -> applied
        self.order_broken: set[tuple[str, str]] = set()
        self.poison: list[bytes] = []
        self.bugs: dict[str, set[str]] = {}  # service -> events its handlers always fail on
        self.newcomer_joined_at: int | None = None  # broker serial when it joined
        self.pg_down: set[str] = set()
        self.broker_down_until = 0.0
        self.settling = False
        self.feeds = FeedTransport(self)

    # --- the world ------------------------------------------------------------------

    async def build(self) -> None:
        replicas = 2 if self.setting.postgres else 1
        late = {f.target for f in self.faults if f.kind == "late_consumer"}
        for spec in ROSTER.services:
            for stream in spec.publishes:
                self.broker.declare_stream(stream, spec.name)
        for spec in ROSTER.services:
            for stream in spec.subscribes:
                self.broker.add_reader(spec.name, stream, SIM_SETTINGS["RETRY_DELAYS_SECONDS"])
        for spec in ROSTER.services:
            await self._add_service(spec, replicas, started=spec.name not in late)

    async def _add_service(self, spec: Any, replicas: int, *, started: bool) -> Service:
        service = await build_service(
            spec,
            self.databases,
            self.broker,
            self.mailbox,
            replicas,
            self.on_publish,
            self.before_handler,
            self.applied,
            self.feeds,
            started=started,
        )
        if self.databases.postgres_url is None:

            def down() -> bool:
                return self.now < service.db_down_until

            for replica in service.replicas:
                sqlite_outage_hook(replica.kit.db.engine, down)
        if started:
            self.bind(service)
        self.services[spec.name] = service
        return service

    def bind(self, service: Service) -> None:
        """A consumer that starts binds what its handlers take (where the broker routes by
        type; until then a publisher bound its queue to everything)."""
        consumer = service.replicas[0].kit.consumer
        if consumer is not None:
            for stream in service.spec.subscribes:
                self.broker.bind(service.name, stream, consumer.subscriptions.types(stream))

    async def close(self) -> None:
        for service in self.services.values():
            for replica in service.replicas:
                await replica.client.aclose()
                with contextlib.suppress(Exception):
                    await replica.kit.relay.leadership.release()
                await replica.kit.db.dispose()
        for name in list(self.pg_down):
            await self.databases.outage(name, False)

    def replicas_of(self, name: str) -> list[Replica]:
        return self.services[name].replicas

    @property
    def consumers(self) -> list[Service]:
        return [s for s in self.services.values() if s.consumes]

    @property
    def publishers(self) -> list[Service]:
        return [s for s in self.services.values() if s.spec.publishes]

    def strike(self, kind: str) -> None:
        self.struck[kind] += 1

    def broken(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    # --- the run --------------------------------------------------------------------

    async def execute(self) -> None:
        await self.build()
        by_step: dict[int, list[Fault]] = {}
        for fault in self.faults:
            by_step.setdefault(fault.step, []).append(fault)
        for step in range(self.steps):
            rng = random.Random(f"{self.seed}:{step}")
            for fault in by_step.get(step, []):
                await self.begin(fault, rng, step)
            await self.tick(rng)
            await self.act(rng, step)
        await self.settle()
        await self.check()

    async def tick(self, rng: random.Random) -> None:
        """Simulated time passes: a little each step, sometimes up to the next retry (and
        the consumers, running meanwhile, take what fell due)."""
        jump = 0.3 if any(self.now < s.db_down_until for s in self.services.values()) else 0.04
        self.now += rng.expovariate(1 / 1.5)
        if rng.random() < jump:
            due = self.broker.next_due()
            self.now = max(self.now, due if due is not None else self.now + rng.uniform(10, 300))
            await self.time_passed()
            await self.drain(rng, limit=40)
            return
        await self.time_passed()

    async def time_passed(self) -> None:
        self.broker.tick()
        for service in self.services.values():
            if service.database in self.pg_down and self.now >= service.db_down_until:
                await self.databases.outage(service.database, False)
                self.pg_down.discard(service.database)
        if self.consumers_follow_at is not None and self.now >= self.consumers_follow_at:
            self.upgrade_consumers()
        if not self.broker.up and self.now >= self.broker_down_until:
            self.broker.up = True

    async def act(self, rng: random.Random, step: int) -> None:
        choices: list[tuple[str, float]] = [
            ("command", 28),
            ("relay", 14),
            ("fetch", 22),
            ("process", 24),
            ("dispatch", 9),
        ]
        if any(r.task is not None and not r.task.done() for r in self.rebuilds):
            choices.append(("rebuild", 12))
        action = rng.choices([c for c, _ in choices], [w for _, w in choices])[0]
        self.stats[f"step:{action}"] += 1
        match action:
            case "command":
                await self.command(rng)
            case "relay":
                publishers = [
                    r
                    for s in self.publishers
                    if self.now >= s.relay_stalled_until
                    for r in s.replicas
                ]
                if publishers:
                    await self.relay(rng.choice(publishers))
            case "fetch":
                await self.fetch(rng)
            case "process":
                ready = [b for b in self.broker.ready() if self.can_apply(b.replica)]
                if ready:
                    await self.process(rng.choice(ready), rng)
            case "dispatch":
                senders = [
                    r
                    for r in self.replicas_of("notification")
                    if self.services["notification"].started
                ]
                if senders:
                    await self.dispatch(rng.choice(senders))
            case "rebuild":
                running = [r for r in self.rebuilds if r.task is not None and not r.task.done()]
                await self.advance(rng.choice(running))

    # --- commands ---------------------------------------------------------------------

    def address(self, n: int) -> str:
        refused = self.armed[("refused_recipient", "")] > 0
        if refused:
            self.armed[("refused_recipient", "")] -= 1
            self.strike("refused_recipient")
        return f"u{n}@{REFUSED_DOMAIN if refused else 'example.com'}"

    async def command(self, rng: random.Random) -> None:
        if self.next_command >= len(self.commands):
            return
        command = self.commands[self.next_command]
        self.next_command += 1
        self.serial += 1
        n = self.serial
        user = self.users[command.ref % len(self.users)] if self.users else None
        client = rng.choice(self.replicas_of("user")).client
        billing = rng.choice(self.replicas_of("billing")).client
        response: httpx.Response | None = None
        match command.kind:
            case "signup":
                response = await client.post(
                    "/users", json={"name": f"User {n}", "email": self.address(n)}
                )
                if response.status_code == 201:
                    self.users.append(response.json()["id"])
            case "rename" if user:
                response = await client.patch(f"/users/{user}", json={"name": f"User {n}"})
            case "email" if user:
                response = await client.patch(f"/users/{user}", json={"email": self.address(n)})
            case "deactivate" if user:
                response = await client.delete(f"/users/{user}")
            case "invoice" if user:
                amount = str(Decimal(command.cents) / 100)
                response = await billing.post("/invoices", json={"user_id": user, "amount": amount})
                if response.status_code == 201:
                    self.invoices.append((response.json()["id"], user))
            case "locale" if user and self.new_types:
                await self.locale_changed(rng.choice(self.replicas_of("user")), user)
            case "remind" if self.invoices and self.new_types:
                invoice = self.invoices[command.ref % len(self.invoices)]
                await self.invoice_reminded(rng.choice(self.replicas_of("billing")), *invoice)
        if response is not None:
            self.stats[f"http:{command.kind}:{response.status_code}"] += 1

    async def locale_changed(self, replica: Replica, user_id: str) -> None:
        """The user service's next release: a command that records a new event type."""
        from user_service import store

        with contextlib.suppress(Exception):
            async with replica.kit.transaction() as session:
                user = await store.load_user(session, user_id)
                if user is None or user.status != "active":
                    return
                change = new_event(
                    "LocaleChanged",
                    {"user_id": user_id, "locale": "pt-BR"},
                    source="user",
                    aggregate_id=user_id,
                    sequence=user.version + 1,
                )
                user.apply(change)
                user.pending.append(change)
                await store.save(session, user)
            self.stats["new type:LocaleChanged"] += 1

    async def invoice_reminded(self, replica: Replica, invoice_id: str, user_id: str) -> None:
        """Billing's next release: a reminder, the invoice's second event, of a new type."""
        if invoice_id in self.reminded:
            return
        with contextlib.suppress(Exception):
            async with replica.kit.transaction() as session:
                reminder = new_event(
                    "InvoiceReminded",
                    {"invoice_id": invoice_id, "user_id": user_id},
                    source="billing",
                    aggregate_id=invoice_id,
                    sequence=2,
                )
                add_to_outbox(session, BILLING_EVENTS, reminder)
            self.reminded.add(invoice_id)
            self.stats["new type:InvoiceReminded"] += 1

    # --- the relay --------------------------------------------------------------------

    async def relay(self, replica: Replica) -> None:
        try:
            await replica.kit.relay.run_once()
            self.stats["relay:round"] += 1
        except Exception:
            self.stats["relay:failed"] += 1
        except Crash:
            self.stats["relay:crashed"] += 1
            # the process is gone, and its session (and lock) with it
            await replica.kit.relay.leadership.release()
        finally:
            self.lost_lead.pop(replica.name, None)

    async def on_publish(self, transport: SimTransport, messages: Sequence[Any]) -> PublishPlan:
        service = transport.service
        lost = self.lost_lead.get(transport.replica)
        if lost is not None and self.lock_connection(transport) is lost:
            self.broken(
                "a relay publishes only while it leads",
                f"{transport.replica}'s relay published {len(messages)} more events "
                "on the lock it had lost (another replica could take it), in the same round",
            )
        if self.take("relay_crash_mid_batch", service, when=len(messages) >= 2):
            at = self.params[("relay_crash_mid_batch", service)]["at"]
            reach = min(len(messages) - 1, max(1, int(at * len(messages))))
            return PublishPlan(reach=reach, crash=True)
        if self.take("relay_crash_before_mark", service):
            return PublishPlan(crash=True)
        if self.take("confirm_lost", service):
            index = self.params[("confirm_lost", service)]["message"] % len(messages)
            return PublishPlan(lost=frozenset({index}))
        batch_size = SIM_SETTINGS["RELAY_BATCH_SIZE"]
        if self.take("relay_leader_change", service, when=len(messages) >= batch_size):
            return PublishPlan(then=lambda: self.leader_change(transport))
        return PublishPlan()

    def lock_connection(self, transport: SimTransport) -> object:
        """The connection on which the replica behind `transport` holds its relay's lock.

        A relay that lost its lock and asked again holds a new one (or none); publishing on
        the old one is the fault."""
        service = self.services[transport.service]
        (replica,) = (r for r in service.replicas if r.name == transport.replica)
        return replica.kit.relay.leadership._connection

    async def leader_change(self, transport: SimTransport) -> None:
        """The leader's lock goes (its session ended); another replica's relay takes over and
        runs a round; a user signs up meanwhile; then the old leader's round goes on."""
        service = self.services[transport.service]
        await self.databases.end_leadership(service.database)
        self.lost_lead[transport.replica] = self.lock_connection(transport)
        for other in service.replicas:
            # a relay whose round waits in a leader change starts no other (one at a time)
            if other.name != transport.replica and other.name not in self.lost_lead:
                with contextlib.suppress(Exception):
                    await other.kit.relay.run_once()
        await self.command(random.Random(f"{self.seed}:leader"))

    def take(self, kind: str, service: str, *, when: bool = True) -> bool:
        """Whether an armed fault of `kind` on `service` strikes now (it is used up)."""
        if self.settling or not when or self.armed[(kind, service)] <= 0:
            return False
        self.armed[(kind, service)] -= 1
        self.strike(kind)
        return True

    # --- consumers --------------------------------------------------------------------

    def can_apply(self, replica: str) -> bool:
        """Not while its own process rebuilds (the batch waits at the consumer's gate)."""
        service = replica.split("/")[0]
        if not self.services[service].started:
            return False
        return not any(
            r.replica.name == replica and r.task is not None and not r.task.done()
            for r in self.rebuilds
        )

    def fetch_options(self) -> list[tuple[Replica, str]]:
        """(replica, source) of every fetch a started consumer could make now."""
        return [
            (replica, source)
            for service in self.consumers
            if service.started
            for replica in service.replicas
            for source in self.broker.sources(replica.name, service.name)
        ]

    async def fetch(self, rng: random.Random) -> None:
        options = self.fetch_options()
        if not options:
            return
        replica, source = rng.choice(options)
        batch = self.broker.fetch(
            replica.name, replica.service, source, SIM_SETTINGS["CONSUMER_BATCH_SIZE"], rng
        )
        self.stats["batches fetched"] += 1
        if self.take("late_delivery", replica.service):
            batch.not_before = (
                max(batch.not_before, self.now)
                + self.params[("late_delivery", replica.service)]["seconds"]
            )
        elif rng.random() < 0.5 and self.can_apply(replica.name) and batch.not_before <= self.now:
            await self.process(batch, rng)

    async def process(self, batch: Batch, rng: random.Random) -> bool:
        """Apply a fetched batch, with the consumer-side faults armed for its service;
        returns whether its handler returned (the batch is done, unless an ack was lost)."""
        service = batch.service
        ack_lost = self.take("ack_lost", service)
        crash_after = self.take("consumer_crash_before_ack", service)
        if self.take("consumer_crash_mid_batch", service):
            at = self.params[("consumer_crash_mid_batch", service)]["at"]
            self.crash_at_call[batch.replica] = max(1, round(at * len(batch.messages)))
        self.calls[batch.replica] = 0
        try:
            await self.broker.process(batch, ack_lost=ack_lost or crash_after)
        except Exception:
            self.stats["batches failed"] += 1
            return False
        except Crash:
            self.stats["consumer crashed"] += 1
            self.broker.crash(batch.replica)
            return False
        finally:
            self.crash_at_call.pop(batch.replica, None)
        self.stats["batches applied"] += 1
        if crash_after:
            self.broker.crash(batch.replica)
        return True

    async def before_handler(
        self,
        replica: str,
        service: str,
        events: list[Envelope],
        replay: bool,
        session: AsyncSession,
    ) -> None:
        self.bug(service, events)
        if replay:
            return
        later = [e for e in events if (e.sequence or 0) > 1]  # never an aggregate's first
        if later and self.take("handler_bug", service):
            self.bugs.setdefault(service, set()).add(str(later[0].id))
            self.bug(service, events)
        self.calls[replica] += 1
        if self.calls[replica] == self.crash_at_call.get(replica):
            raise Crash(f"{replica} died applying {events[0].type} {events[0].id}")
        if self.take("handler_error", service):
            raise RuntimeError("a simulated transient handler error")

    def bug(self, service: str, events: list[Envelope]) -> None:
        """A handler bug strikes its event every time, live or replayed."""
        for envelope in events:
            if str(envelope.id) in self.bugs.get(service, ()):
                raise RuntimeError(f"simulated handler bug on {envelope.type} {envelope.id}")

    def applied(self, service: str, events: list[Envelope], replay: bool) -> None:
        """A handler's events committed: they must come in each aggregate's order, once."""
        for envelope in events:
            if envelope.aggregate_id is None or envelope.sequence is None:
                continue
            key = (service, envelope.aggregate_id)
            seen = self.order.setdefault(key, [])
            first = not seen
            seen.append(envelope.sequence)
            if key in self.order_broken:
                continue
            expected = seen[-2] + 1 if len(seen) > 1 else 1
            if first and service == NEWCOMER:
                continue  # it joined late: any event may be its first of an aggregate
            if envelope.sequence != expected:
                self.order_broken.add(key)
                what = "again" if envelope.sequence in seen[:-1] else "out of order"
                self.broken(
                    "per-aggregate order, once",
                    f"{service} applied {envelope.type} #{envelope.sequence} of "
                    f"{envelope.aggregate_id} {what} (applied so far: {seen[:-1]}"
                    f"{', replaying' if replay else ''})",
                )

    # --- notification ------------------------------------------------------------------

    async def dispatch(self, replica: Replica) -> None:
        try:
            for _ in range(30):
                if not await replica.dispatcher.send_pending():
                    break
        except Exception:
            self.stats["dispatch failed"] += 1
        except Crash:
            self.stats["dispatcher crashed"] += 1

    # --- rebuilds ---------------------------------------------------------------------

    async def start_rebuild(self, replica: Replica, fail_at: int | None, step: int) -> RebuildRun:
        run = RebuildRun(replica.service, replica, fail_at, step, through=self.settling)
        self.moment += 1
        run.began = self.moment

        async def request() -> httpx.Response:
            current_rebuild.set(run)
            return await replica.client.post("/admin/rebuild")

        self.rebuilds.append(run)
        run.task = asyncio.create_task(request())
        await self.advance(run)
        return run

    async def advance(self, run: RebuildRun) -> None:
        """Let a rebuild go on to its next feed request, or to its end."""
        assert run.task is not None
        run.parked.clear()
        run.go.set()
        parked = asyncio.ensure_future(run.parked.wait())
        await asyncio.wait({parked, run.task}, return_when=asyncio.FIRST_COMPLETED)
        parked.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await parked
        if run.task.done() and run.ended is None:
            await self.rebuild_ended(run)

    async def feed_request(self, request: httpx.Request) -> httpx.Response:
        run = current_rebuild.get()
        if run is not None:
            if run.requests == 0:  # it has emptied the read model: the order starts over
                for key in [k for k in self.order if k[0] == run.service]:
                    del self.order[key]
                self.order_broken = {k for k in self.order_broken if k[0] != run.service}
            await run.stop_here()
            run.requests += 1
            if run.fail_at is not None and run.requests == run.fail_at and not self.settling:
                self.strike("rebuild_fails")
                if run.fail_at % 2:
                    raise httpx.ConnectError("simulated: the feed did not answer", request=request)
                return httpx.Response(503, json={"detail": "simulated outage"}, request=request)
        url = str(request.url)
        for name in ROSTER.names:
            base = ROSTER.url(name)
            if url.startswith(base + "/"):
                target = httpx.ASGITransport(app=self.replicas_of(name)[0].app)
                page = request.url.copy_set_param("limit", str(FEED_PAGE))
                inner = httpx.Request(request.method, page, headers=request.headers)
                return await target.handle_async_request(inner)
        return httpx.Response(404, request=request)

    async def rebuild_ended(self, run: RebuildRun) -> None:
        assert run.task is not None
        self.moment += 1
        run.ended = self.moment
        try:
            status = run.task.result().status_code
        except Exception as exc:  # the route raised through the test client
            status = 500
            self.stats[f"rebuild raised {type(exc).__name__}"] += 1
        self.stats[f"rebuild:{run.service}:{status}"] += 1
        run.status = status
        if status == 200:
            self.failed_rebuild.discard(run.service)
            for other in self.rebuilds:
                if (
                    other is not run
                    and other.service == run.service
                    and other.status == 200
                    and other.ended is not None
                    and other.began < run.ended
                    and run.began < other.ended
                ):
                    self.broken(
                        "one rebuild at a time",
                        f"two rebuilds of {run.service}'s read model ran at once "
                        f"(from steps {other.started} and {run.started}) and both "
                        "answered 200",
                    )
            return
        if status == 409:
            return
        self.failed_rebuild.add(run.service)
        if not self.settling:
            await self.probe_read_model(run.replica)

    async def probe_read_model(self, replica: Replica) -> None:
        """Right after a failed rebuild the read routes must answer 503, not a partial model."""
        probes = {
            "billing": f"/accounts/{self.users[0] if self.users else 'nobody'}",
            "analytics": "/stats",
            "notification": "/notifications",
        }
        path = probes.get(replica.service)
        if path is None:
            return
        for other in self.replicas_of(replica.service):
            status = (await other.client.get(path)).status_code
            if status != 503:
                self.broken(
                    "a failed rebuild answers 503",
                    f"after a rebuild of {replica.service} failed midway, GET {path} on "
                    f"{other.name} answered {status}: a partial read model in service",
                )
                return

    async def expire_lease(self, service: Service) -> None:
        """The rebuild's lease runs out while it stalls (as if a minute passed unrenewed)."""
        from datetime import timedelta

        db = service.replicas[0].kit.db
        async with db.transaction() as session:  # the lease runs on eventkit's clock, the run's
            await session.execute(
                update(ConsumerPause)
                .where(ConsumerPause.id == 1)
                .values(paused_until=clock.utcnow() - timedelta(seconds=1))
            )

    # --- faults -------------------------------------------------------------------------

    async def begin(self, fault: Fault, rng: random.Random, step: int) -> None:
        kind, target, params = fault.kind, fault.target, fault.params
        service = self.services.get(target)
        self.params[(kind, target)] = params
        match kind:
            case (
                "relay_crash_mid_batch"
                | "relay_crash_before_mark"
                | "confirm_lost"
                | "relay_leader_change"
                | "ack_lost"
                | "consumer_crash_before_ack"
                | "consumer_crash_mid_batch"
                | "handler_error"
                | "handler_bug"
                | "late_delivery"
                | "refused_recipient"
            ):
                self.armed[(kind, target)] += 1
            case "relay_stalled":
                assert service is not None
                service.relay_stalled_until = self.now + params["seconds"]
                self.strike(kind)
            case "broker_outage":
                self.broker.up = False
                self.broker_down_until = self.now + params["seconds"]
                self.strike(kind)
            case "db_outage" | "db_outage_long":
                assert service is not None
                service.db_down_until = max(service.db_down_until, self.now + params["seconds"])
                if self.databases.postgres_url is not None:
                    await self.databases.outage(service.database, True)
                    self.pg_down.add(service.database)
                self.strike(kind)
            case "smtp_outage":
                self.mailbox.down_until = self.now + params["seconds"]
                self.strike(kind)
            case "dispatcher_crash":
                self.mailbox.crash_in = params["after"]
                self.mailbox.crash_armed = True
                self.strike(kind)
            case "consumer_restart":
                assert service is not None
                self.broker.crash(rng.choice(service.replicas).name)
                self.strike(kind)
            case "rebalance":
                self.broker.rebalance()
                self.strike(kind)
            case "mangled_attempts":
                self.broker.mangle[target] = self.now + params["seconds"]
                self.strike(kind)
            case "rebuild" | "rebuild_fails":
                assert service is not None
                if service.started and not self.rebuilding(target):
                    fail_at = params.get("request") if kind == "rebuild_fails" else None
                    await self.start_rebuild(rng.choice(service.replicas), fail_at, step)
                    if kind == "rebuild":
                        self.strike(kind)
            case "rebuild_lease_expires":
                assert service is not None
                if service.started and not self.rebuilding(target) and len(service.replicas) > 1:
                    first = await self.start_rebuild(service.replicas[0], None, step)
                    if first.task is not None and not first.task.done():
                        await self.expire_lease(service)
                        await self.start_rebuild(service.replicas[1], None, step)
                        self.strike(kind)
            case "late_consumer":
                assert service is not None
                service.started = True
                self.bind(service)
                self.strike(kind)
            case "newcomer":
                await self.newcomer_joins(params["retained"])
            case "ordering_added_later":
                assert service is not None
                if (
                    not self.rebuilding(target)
                    and self.now >= service.db_down_until
                    and self.drained(service)
                ):
                    await self.ordering_arrives(service)
            case "publisher_new_version":
                self.publish_new_version()
                self.follow(params["consumers_follow_after"])
                self.strike(kind)
            case "publisher_new_type":
                self.new_types = True
                self.follow(params["consumers_follow_after"])
                self.strike(kind)
            case "poison":
                self.inject_poison(params["body"], [USER_EVENTS, BILLING_EVENTS][params["stream"]])
            case "dlq_replay":
                assert service is not None
                response = await service.replicas[0].client.post("/dlq/replay")
                self.stats[f"dlq replay:{response.status_code}"] += 1
                self.strike(kind)

    def rebuilding(self, service: str) -> bool:
        return any(
            r.service == service and r.task is not None and not r.task.done() for r in self.rebuilds
        )

    async def newcomer_joins(self, retained: float) -> None:
        if NEWCOMER in self.services:
            return
        for stream in NEWCOMER_ROSTER.service(NEWCOMER).subscribes:
            delays = SIM_SETTINGS["RETRY_DELAYS_SECONDS"]
            self.broker.add_reader(NEWCOMER, stream, delays, retained=retained)
        self.newcomer_joined_at = self.broker.serial
        replicas = 2 if self.setting.postgres else 1
        await self._add_service(NEWCOMER_ROSTER.service(NEWCOMER), replicas, started=True)
        for replica in self.services[NEWCOMER].replicas:
            if self.consumers_follow_at is not None and self.registry is not ROSTER.events:
                self._upgrade(replica)
        self.strike("newcomer")

    def drained(self, service: Service) -> bool:
        """Nothing of `service`'s is queued, in a retry or in the dead letters.

        Code from before positions were kept made no retry or dead letter that waits for an
        earlier event, so a database from then holds none; and the README tells a deploy
        of positions to come with the retries drained and the dead letters replayed. (One
        that left "#3 waits for #2" in the dead letters saw #4 open the position at #3.)
        """
        return self.broker.backlog(service.name) == 0 and not self.broker.dead_letters.get(
            service.name
        )

    async def ordering_arrives(self, service: Service) -> None:
        """The consumer ran before eventkit kept aggregate positions: its database goes back
        to eventkit_0001 (no positions, no pause) and is upgraded again, as a deploy does."""
        from alembic import command

        from eventkit.migrations import config, upgrade_async

        if service.migrations is None:
            return
        for replica in service.replicas:
            await replica.kit.db.engine.dispose()
        cfg = config(service.url, service.migrations)
        await asyncio.to_thread(command.downgrade, cfg, "eventkit_0001")
        await upgrade_async(service.url, service.migrations)
        self.strike("ordering_added_later")

    def publish_new_version(self) -> None:
        import user_service.domain

        user_service.domain.EVENTS = upgraded_registry()  # type: ignore[attr-defined]
        self.publisher_upgraded = True

    def follow(self, after: float) -> None:
        at = self.now + after
        self.consumers_follow_at = (
            at if self.consumers_follow_at is None else min(self.consumers_follow_at, at)
        )

    def upgrade_consumers(self) -> None:
        if self.registry is not ROSTER.events:
            return
        self.registry = upgraded_registry()
        for service in self.consumers:
            for replica in service.replicas:
                self._upgrade(replica)

    def _upgrade(self, replica: Replica) -> None:
        for consumer in (replica.kit.consumer, replica.kit.replay_consumer):
            if consumer is not None:
                consumer.events = self.registry

    def inject_poison(self, kind: str, stream: str) -> None:
        event_id = str(uuid.uuid4())
        event_type = "UserCreated" if stream == USER_EVENTS else "InvoiceIssued"
        body = {
            "not json": b"\x00 not json",
            "not an envelope": json.dumps({"hello": "world"}).encode(),
            "no id": json.dumps({"type": event_type, "source": "sim", "data": {}}).encode(),
            "invalid data": json.dumps(
                {
                    "id": event_id,
                    "type": event_type,
                    "source": "sim",
                    "version": 1,
                    "data": {"user_id": 7},
                }
            ).encode(),
        }[kind]
        assert kind in POISON_KINDS
        try:
            self.broker.publish(stream, body, "", event_type, {}, "inject")
        except ConnectionError:
            return
        self.poison.append(body)
        self.strike("poison")

    # --- settling ---------------------------------------------------------------------

    async def settle(self) -> None:
        """Every fault ends; everything is delivered, retried and sent; failed rebuilds are
        run again. A run that does not get there is a violation of its own."""
        self.settling = True
        self.mailbox.down_until = 0.0
        self.mailbox.crash_armed = False
        self.broker.up = True
        self.armed.clear()
        self.broker.mangle.clear()
        for service in self.services.values():
            service.db_down_until = 0.0
            service.relay_stalled_until = 0.0
            if not service.started:
                service.started = True
                self.bind(service)
        await self.time_passed()
        if self.publisher_upgraded or self.new_types:
            self.upgrade_consumers()
        for run in self.rebuilds:
            run.through = True
            if run.task is not None and not run.task.done():
                await self.advance(run)
        stuck = 0  # rounds in a row where batches failed and none went through
        for _ in range(SETTLE_ROUNDS):
            for name in sorted(self.failed_rebuild):
                await self.start_rebuild(self.replicas_of(name)[0], None, self.steps)
            for service in self.publishers:
                for replica in service.replicas:
                    await self.relay(replica)
            failed_before = self.stats["batches failed"]
            applied = await self.drain(limit=SETTLE_BATCHES)
            failed = self.stats["batches failed"] - failed_before
            for replica in self.replicas_of("notification"):
                await self.dispatch(replica)
            if failed and not applied and (left := await self.lease_left()) > 0:
                self.now += left + 1  # a rebuild that could not release its pause holds it
                await self.time_passed()
                continue
            stuck = stuck + 1 if failed and not applied else 0
            if stuck >= 3:
                break
            if applied or failed:
                continue
            due = self.broker.next_due()
            if due is not None:
                self.now = due
                await self.time_passed()
                continue
            if await self.quiet():
                return
        backlog = {s.name: self.broker.backlog(s.name) for s in self.consumers}
        self.broken(
            "settles",
            f"with every fault over, consumption does not finish: backlog "
            f"{backlog}, failing rebuilds {sorted(self.failed_rebuild)}, "
            f"{self.stats['batches failed']} batches failed",
        )

    async def drain(self, rng: random.Random | None = None, limit: int = SETTLE_BATCHES) -> int:
        """Apply what the consumers can take now, batch after batch; returns how many went
        through. Stops at `limit` batches, or at a batch that keeps failing."""
        rng = rng or random.Random(f"{self.seed}:settle")
        applied = tried = 0
        while tried < limit:
            ready = [b for b in self.broker.ready() if self.can_apply(b.replica)]
            if ready:
                tried += 1
                if await self.process(ready[0], rng):
                    applied += 1
                elif tried > applied + 20:  # the same batch again and again
                    break
                continue
            options = self.fetch_options()
            if not options:
                break
            replica, source = options[0]
            self.broker.fetch(
                replica.name, replica.service, source, SIM_SETTINGS["CONSUMER_BATCH_SIZE"], rng
            )
        return applied

    async def lease_left(self) -> float:
        """Seconds until the last rebuild pause still held runs out: a rebuild that failed
        with its database down could not release it, and it blocks every batch and the next
        rebuild until its lease ends (pause.LEASE)."""
        left = 0.0
        for service in self.consumers:
            async with service.replicas[0].kit.db.sessions() as session:
                row = await session.get(ConsumerPause, 1)
            if row is not None and row.paused_until is not None:
                until = row.paused_until.replace(tzinfo=row.paused_until.tzinfo or UTC)
                left = max(left, (until - clock.utcnow()).total_seconds())
        return left

    async def quiet(self) -> bool:
        if any(self.broker.backlog(s.name) for s in self.consumers):
            return False
        for service in self.publishers:
            if await self.unsent(service):
                return False
        return True

    async def unsent(self, service: Service) -> int:
        async with service.replicas[0].kit.db.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
            )
        return int(count or 0)

    # --- the invariants ---------------------------------------------------------------

    async def history(self) -> list[tuple[str, Envelope]]:
        """Every accepted event, from the stores: (stream, event), in production order."""
        from user_service import store
        from user_service.models import StoredEvent

        async with self.replicas_of("user")[0].kit.db.sessions() as session:
            rows = (await session.scalars(select(StoredEvent).order_by(StoredEvent.position))).all()
            user_events = [store._envelope(row) for row in rows]
        async with self.replicas_of("billing")[0].kit.db.sessions() as session:
            bodies = (
                await session.scalars(select(OutboxMessage.body).order_by(OutboxMessage.position))
            ).all()
            billing_events = [Envelope.model_validate_json(body) for body in bodies]
        return list(
            heapq.merge(
                [(USER_EVENTS, e) for e in user_events],
                [(BILLING_EVENTS, e) for e in billing_events],
                key=lambda item: item[1].timestamp,
            )
        )

    async def check(self) -> None:
        for observation in self.broker.observations:
            self.broken(observation.invariant, observation.detail)
        history = await self.history()
        self.stats["events"] = len(history)
        published = {m.event_id for ms in self.broker.published.values() for m in ms}
        missing = [e for _, e in history if str(e.id) not in published]
        if missing:
            self.broken(
                "every event is published",
                f"{len(missing)} events never reached the broker, e.g. {missing[0].type} "
                f"#{missing[0].sequence} of {missing[0].aggregate_id}",
            )
        poison = set(self.poison)
        for service, letters in sorted(self.broker.dead_letters.items()):
            bad = [
                m
                for m in letters
                if m.body not in poison and not self.poisoned(service, m.event_id, history)
            ]
            if bad:
                kinds = Counter(f"{identify_type(m.body)}" for m in bad)
                self.broken(
                    "dead letters are poison",
                    f"{service} dead-lettered {len(bad)} good events "
                    f"({dict(kinds)}), e.g.: {bad[0].headers.get('x-error', '')[:160]}",
                )
        for consumer in self.consumers:
            if consumer.name == NEWCOMER:
                await self.check_newcomer(consumer, history)
            else:
                await self.check_replay(consumer, history)
        self.check_emails(history)

    def poisoned(
        self, service: str, event_id: str | None, history: list[tuple[str, Envelope]]
    ) -> bool:
        """Whether `service` cannot apply the event by construction: a handler bug strikes
        it, or an earlier event of its aggregate (which it waits behind)."""
        bugs = self.bugs.get(service)
        if not bugs or event_id is None:
            return False
        events = {str(e.id): e for _, e in history}
        event = events.get(event_id)
        if event is None:
            return False
        return any(
            str(e.id) in bugs
            and e.aggregate_id == event.aggregate_id
            and (e.sequence or 0) <= (event.sequence or 0)
            for e in events.values()
        )

    async def check_replay(self, service: Service, history: list[tuple[str, Envelope]]) -> None:
        replica = service.replicas[0]
        kit = replica.kit
        assert kit.replay_consumer is not None
        url = await self.databases.new(service.name, service.migrations)
        db = Database(url)
        broker = model(self.setting.broker)(lambda: self.now)
        transport = SimTransport(
            broker, service.name, "reference", SimConfig(service=service.name), _plain_publish
        )
        for stream in service.spec.subscribes:
            broker.declare_stream(stream, ROSTER.producer(stream).name)
            broker.add_reader(service.name, stream, (1.0,))
        assert replica.replay_subscriptions is not None

        async def bugs_only(_: str, name: str, events: list[Envelope], *__: Any) -> None:
            self.bug(name, events)  # the same code, with the same bugs

        handlers = tapped(
            replica.replay_subscriptions,
            "reference",
            service.name,
            True,
            bugs_only,
            lambda *_: None,
        )
        reference = Consumer(service.name, handlers, self.registry, db, transport, replay=True)
        try:
            for stream, batch in _batches(history, service.spec.subscribes):
                await reference.handle_batch(stream, batch)
            stuck = [
                m
                for ms in broker.dead_letters.values()
                for m in ms
                if not self.poisoned(service.name, m.event_id, history)
            ]
            if stuck:
                letter = stuck[0]
                self.broken(
                    "read model equals a replay",
                    f"a fresh {service.name} consumer fed the stores cannot apply "
                    f"{identify_type(letter.body)}: {letter.headers.get('x-error')}",
                )
            live = await dump(kit.db, kit.read_models)
            fresh = await dump(db, kit.read_models)
        finally:
            await db.dispose()
        emails = emails_by_user(history)
        for table in sorted(set(live) | set(fresh)):
            ours, theirs = live.get(table, []), fresh.get(table, [])
            if table == "notifications":
                ours, theirs = self._recipients(ours, emails), self._recipients(theirs, emails)
            if ours != theirs:
                self.broken(
                    "read model equals a replay",
                    f"{service.name}.{table}: {describe_difference(ours, theirs)}",
                )

    def _recipients(self, rows: list[dict[str, Any]], emails: dict[str, list[str]]) -> list[Any]:
        """An invoice's email goes to the address its user had when it was applied, which the
        streams' interleaving decides: any of the user's addresses is right."""
        kept = []
        for row in rows:
            if row["kind"] == "invoice_issued":
                row = dict(row)
                if row["recipient"] in emails.get(row["user_id"], []):
                    row["recipient"] = "(an address of the user)"
            kept.append(row)
        return kept

    async def check_newcomer(self, service: Service, history: list[tuple[str, Envelope]]) -> None:
        routed = self.broker.routed.get(NEWCOMER, [])
        visible: dict[str, int] = {}
        for message in routed:
            _, aggregate, sequence = identify(message.body)
            if aggregate is not None and sequence is not None and message.body not in self.poison:
                visible[aggregate] = min(visible.get(aggregate, sequence), sequence)
        first_publication: dict[str, int] = {}
        for messages in self.broker.published.values():
            for message in messages:
                if message.event_id is not None:
                    first_publication.setdefault(message.event_id, message.serial)
        async with service.replicas[0].kit.db.sessions() as session:
            rows = {
                row.aggregate_id: row for row in (await session.scalars(select(LastEvent))).all()
            }
        by_aggregate: dict[str, list[Envelope]] = {}
        for _, envelope in history:
            if envelope.aggregate_id is not None:
                by_aggregate.setdefault(envelope.aggregate_id, []).append(envelope)
        joined = self.newcomer_joined_at or 0
        for aggregate, events in sorted(by_aggregate.items()):
            last = events[-1]
            fresh = [
                e.sequence
                for e in events
                if first_publication.get(str(e.id), joined + 1) > joined and e.sequence
            ]
            low = visible.get(aggregate)
            high = min(fresh) if fresh else (last.sequence or 0) + 1
            row = rows.get(aggregate)
            if low is None:
                if row is not None:
                    self.broken(
                        "a late service sees a whole suffix",
                        f"newcomer has {aggregate}, none of whose events reached it",
                    )
                continue
            allowed = {(last.sequence or 0) - k + 1 for k in range(low, high + 1)}
            events_seen = row.events if row is not None else 0
            if events_seen not in allowed or (
                row is not None
                and (row.last_sequence != last.sequence or row.last_type != last.type)
            ):
                self.broken(
                    "a late service sees a whole suffix",
                    f"newcomer holds {events_seen} events of {aggregate} (last "
                    f"#{row.last_sequence if row else None}); it could see #{low} on, the "
                    f"last is #{last.sequence} {last.type}",
                )

    def check_emails(self, history: list[tuple[str, Envelope]]) -> None:
        if "notification" not in self.services:
            return
        expected: list[tuple[str, str]] = []
        invoices: dict[str, str] = {}  # subject -> user
        skipped = {
            str(e.id) for _, e in history if self.poisoned("notification", str(e.id), history)
        }
        people: dict[str, dict[str, str]] = {}
        for stream, envelope in history:
            data = envelope.data
            if str(envelope.id) in skipped:  # a handler bug and what waits behind it: no email
                continue
            if stream == BILLING_EVENTS:
                if envelope.type == "InvoiceIssued":
                    invoices[f"Invoice {data['invoice_id']}: {data['amount']}"] = data["user_id"]
                continue
            person = people.setdefault(data["user_id"], {})
            match envelope.type:
                case "UserCreated":
                    person.update(name=data["name"], email=data["email"])
                    expected.append((data["email"], f"Welcome, {data['name']}!"))
                case "NameChanged":
                    person["name"] = data["new_name"]
                case "EmailChanged":
                    person["email"] = data["new_email"]
                    expected.append((data["new_email"], "Your email address changed"))
                case "UserDeactivated":
                    expected.append((person["email"], f"Goodbye, {person['name']}"))
        sent, refused = self.mailbox.sent, self.mailbox.refused
        self.stats["emails expected"] = len(expected) + len(invoices)
        self.stats["emails sent"] = sum(sent.values())
        never = [key for key in expected if not sent[key] and not refused[key]]
        emails = emails_by_user(history)
        by_subject: Counter[str] = Counter()
        for (_, subject), count in (sent + refused).items():
            by_subject[subject] += count
        never += [("?", s) for s in invoices if not by_subject[s]]
        if never:
            self.broken(
                "every email is sent",
                f"{len(never)} of {len(expected) + len(invoices)} emails were never sent "
                f"nor refused, e.g. {never[0][1]!r} to {never[0][0]}",
            )
        twice = [
            (key, count) for key, count in sent.items() if count > 1 + self.mailbox.may_repeat[key]
        ]
        if twice:
            (to, subject), count = twice[0]
            self.broken(
                "an email goes once",
                f"{len(twice)} emails went more than once with no crash between their "
                f"send and mark ({self.mailbox.crashes} crashes), e.g. {subject!r} to "
                f"{to} {count} times",
            )
        known = set(expected)
        for to, subject in sent:
            user = invoices.get(subject)
            if (to, subject) not in known and (user is None or to not in emails.get(user, [])):
                self.broken(
                    "every email is sent", f"an email no event called for: {subject!r} to {to}"
                )
                break


async def _plain_publish(transport: SimTransport, messages: Sequence[Any]) -> PublishPlan:
    return PublishPlan()


def identify_type(body: bytes) -> str:
    try:
        raw = json.loads(body)
        return f"{raw.get('type')} #{raw.get('sequence')}"
    except (ValueError, AttributeError):
        return "not JSON"


def emails_by_user(history: list[tuple[str, Envelope]]) -> dict[str, list[str]]:
    emails: dict[str, list[str]] = {}
    for stream, envelope in history:
        if stream == USER_EVENTS:
            address = envelope.data.get("email") or envelope.data.get("new_email")
            if address:
                emails.setdefault(envelope.data["user_id"], []).append(address)
    return emails


def _batches(
    history: list[tuple[str, Envelope]], streams: Sequence[str]
) -> Iterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    """The events of `streams` as a rebuild feeds them: runs of one stream, a few at a time."""
    batch: list[tuple[bytes, dict[str, str]]] = []
    current = ""
    for stream, envelope in history:
        if stream not in streams:
            continue
        if batch and (stream != current or len(batch) >= 50):
            yield current, batch
            batch = []
        current = stream
        batch.append((envelope.model_dump_json().encode(), {}))
    if batch:
        yield current, batch


# Columns a replay cannot reproduce: row ids made afresh, and when an email went out.
COMPARED = {
    "notifications": (
        "event_id",
        "user_id",
        "kind",
        "channel",
        "recipient",
        "subject",
        "created_at",
    ),
}


async def dump(db: Database, models: Sequence[type[Any]]) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {}
    async with db.sessions() as session:
        for model in models:
            table = model.__table__
            columns = COMPARED.get(table.name) or tuple(c.name for c in table.columns)
            rows = (await session.execute(select(*(table.c[c] for c in columns)))).all()
            tables[table.name] = sorted(
                (dict(zip(columns, row, strict=True)) for row in rows),
                key=lambda r: json.dumps(r, sort_keys=True, default=str),
            )
    return tables


def describe_difference(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> str:
    only_live = [r for r in ours if r not in theirs]
    only_fresh = [r for r in theirs if r not in ours]
    parts = [f"live has {len(ours)} rows, the replay {len(theirs)}"]
    if only_live:
        parts.append(f"only live: {only_live[0]}")
    if only_fresh:
        parts.append(f"only in the replay: {only_fresh[0]}")
    return "; ".join(parts)


# --- running seeds -------------------------------------------------------------------------


@contextlib.contextmanager
def isolated(seed: int) -> Iterator[None]:
    """What a run changes in the process, undone after it: ids drawn from the seed (so a
    seed replays the same ids), quiet logs, and the user service's event versions."""
    import user_service.domain

    ids = random.Random(f"{seed}:ids")
    real_uuid4 = uuid.uuid4
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    events = user_service.domain.EVENTS  # type: ignore[attr-defined]
    uuid.uuid4 = lambda: uuid.UUID(int=ids.getrandbits(128), version=4)
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        uuid.uuid4 = real_uuid4
        logging.disable(logging.NOTSET)
        root.handlers[:], root.level = handlers, level
        user_service.domain.EVENTS = events  # type: ignore[attr-defined]


async def run_seed(
    seed: int,
    setting: Setting,
    faults: Sequence[Fault],
    *,
    postgres_url: str | None = None,
    steps: int = STEPS,
    draw: tuple[str, ...] = (),
) -> RunResult:
    started = time.perf_counter()
    databases = Databases(postgres_url if setting.postgres else None)
    with isolated(seed):
        run = Run(seed, setting, faults, databases, steps)
        start = time.time()
        try:
            with clock.use(lambda: start + run.now):  # eventkit's waits on the run's clock
                await run.execute()
        finally:
            for rebuild in run.rebuilds:
                if rebuild.task is not None and not rebuild.task.done():
                    rebuild.task.cancel()
                    with contextlib.suppress(BaseException):
                        await rebuild.task
            await run.close()
            await databases.close()
    return RunResult(
        seed,
        setting,
        list(faults),
        run.violations,
        run.struck,
        run.stats,
        time.perf_counter() - started,
        draw,
    )


def replay_command(result: RunResult, kept: list[int] | None = None) -> str:
    """The make command that runs this seed again (with only the faults `kept`, indexes
    into its fault list)."""
    options = list(result.draw)
    if result.setting.postgres:
        options.append("--database postgres")
    command = f"make simulate SEED={result.seed}"
    if kept is not None:
        command += f" FAULTS={','.join(map(str, kept)) or '-'}"
    if options:
        command += f' ARGS="{" ".join(options)}"'
    return command


async def shrink(
    result: RunResult, *, postgres_url: str | None = None, steps: int = STEPS
) -> list[Fault]:
    """The fewest of the run's faults that still break one of the invariants it broke
    (delta debugging over the fault list; the seed's commands stay)."""
    target = {v.invariant for v in result.violations}

    async def fails(faults: list[Fault]) -> bool:
        again = await run_seed(
            result.seed,
            result.setting,
            faults,
            postgres_url=postgres_url,
            steps=steps,
            draw=result.draw,
        )
        return any(v.invariant in target for v in again.violations)

    faults = list(result.faults)
    if await fails([]):
        return []
    chunks = 2
    while len(faults) >= 2:
        size = -(-len(faults) // chunks)
        parts = [faults[i : i + size] for i in range(0, len(faults), size)]
        for index in range(len(parts)):
            rest = [f for j, part in enumerate(parts) if j != index for f in part]
            if await fails(parts[index]):
                faults, chunks = parts[index], 2
                break
            if chunks > 2 and await fails(rest):
                faults, chunks = rest, max(chunks - 1, 2)
                break
        else:
            if chunks >= len(faults):
                break
            chunks = min(len(faults), chunks * 2)
    if len(faults) == 1:
        return faults
    for fault in list(faults):  # one at a time, for what the halving left
        fewer = [f for f in faults if f is not fault]
        if await fails(fewer):
            faults = fewer
    return faults
