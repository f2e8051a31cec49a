"""What a running service holds: database, broker transport, outbox relay and consumer."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit.consumer import Consumer
from eventkit.db import Database
from eventkit.envelope import Envelope
from eventkit.inbox import ProcessedEvent
from eventkit.metrics import BROKER_UP, RETRY_POLICY
from eventkit.migrations import upgrade_async
from eventkit.outbox import OutboxMessage, OutboxRelay
from eventkit.roster import Roster, ServiceSpec
from eventkit.settings import ServiceSettings
from eventkit.subscriptions import Subscriptions
from eventkit.transports import Outgoing, Transport, create_transport

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A service's own background task (e.g. sending emails), run beside the kit's."""

    def start(self, kit: ServiceKit) -> None: ...

    async def stop(self) -> None: ...


class ServiceKit:
    """One service's moving parts; routes reach it through the `Kit` dependency (deps.py)."""

    def __init__(
        self,
        settings: ServiceSettings,
        roster: Roster,
        subscriptions: Subscriptions | None = None,
        transport: Transport | None = None,
        replay_subscriptions: Subscriptions | None = None,
        migrations: Path | None = None,
        workers: Sequence[Worker] = (),
    ) -> None:
        self.settings = settings
        self.workers = list(workers)
        delays = ",".join(f"{delay:g}" for delay in settings.RETRY_DELAYS_SECONDS)
        RETRY_POLICY.info(
            {"max_retries": str(settings.MAX_RETRIES), "retry_delays_seconds": delays}
        )
        self.roster = roster
        self.spec: ServiceSpec = roster.service(settings.SERVICE_NAME)
        _check_against_roster(self.spec, subscriptions)
        self.migrations = migrations
        self.db = Database(settings.database_url, settings.DATABASE_COMMAND_TIMEOUT_SECONDS)
        self.transport: Transport = transport or create_transport(settings)
        self.relay = OutboxRelay(
            self.db,
            self.transport,
            settings.OUTBOX_POLL_SECONDS,
            batch_size=settings.RELAY_BATCH_SIZE,
        )

        def consumer(subs: Subscriptions | None, *, replay: bool = False) -> Consumer | None:
            if subs is None:
                return None
            name = settings.SERVICE_NAME
            return Consumer(name, subs, roster.events, self.db, self.transport, replay=replay)

        self.consumer = consumer(subscriptions)
        self.replay_consumer = consumer(replay_subscriptions or subscriptions, replay=True)
        # What a rebuild empties: the read models the handlers project into.
        self.read_models = list(subscriptions.read_models) if subscriptions else []
        for stream in self.spec.publishes:
            self.transport.declare_publisher(
                stream,
                description=roster.events.describe(stream),
                subscribers=[spec.name for spec in roster.subscribers(stream)],
            )
        self.connected = asyncio.Event()
        self.broker_up = False
        self.rebuilding = asyncio.Lock()  # one rebuild at a time in this process
        # How a rebuild reaches the feeds; None: the network (the simulation sets its own).
        self.feed_transport: httpx.AsyncBaseTransport | None = None
        self._connector: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work; events added to the outbox in it leave right after the commit."""
        async with self.db.transaction() as session:
            yield session
        self.relay.wake()

    async def publish_message(self, stream: str, payload: Envelope | Mapping[str, Any]) -> Envelope:
        """Publish straight to the broker, past the outbox: for tools and one-off messages.

        A state change goes through the outbox instead (`add_to_outbox` in the transaction
        that makes it), so it is never lost. `payload` is an Envelope, or a dict with `type`
        and `data` (and any other envelope field) that is wrapped in one with this service
        as its source. The event must be one the roster's registry knows.
        """
        if isinstance(payload, Envelope):
            event = payload
        else:
            fields = {"source": self.settings.SERVICE_NAME, **payload}
            event = Envelope.model_validate({"id": uuid.uuid4(), **fields})
        self.roster.events.validate(event)
        await self.transport.publish(Outgoing.of(stream, event))
        return event

    def feed_urls(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """Where the feed of each stream this service subscribes to is served."""
        return {
            stream: self.roster.url(self.roster.producer(stream).name, environ) + "/events"
            for stream in self.spec.subscribes
        }

    async def start(self) -> None:
        if self.migrations is not None:
            await upgrade_async(self.settings.database_url, self.migrations)
        else:  # no migration history (eventkit's own tests): create the tables directly
            await self.db.create_all()
        if self.consumer is not None:
            self.consumer.attach()
        for worker in self.workers:
            worker.start(self)
        self._connector = asyncio.create_task(self._connect(), name="broker-connect")
        self._pruner = asyncio.create_task(self._prune_periodically(), name="retention")

    async def _connect(self) -> None:
        """Keep trying the broker so HTTP comes up (and /ready explains) while it is down."""
        delay = 0.5
        while True:
            try:
                await self.transport.start()
                break
            except Exception as exc:  # the broker is not there yet
                log.warning("could not start on the broker (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.connected.set()
        self.broker_up = True
        BROKER_UP.set(1)
        self.relay.start()
        log.info("connected to the %s broker", self.settings.broker)
        self._watchdog = asyncio.create_task(self._watch_broker(), name="broker-watchdog")

    async def _watch_broker(self, every: float = 1.0, misses: int = 3) -> None:
        """Notice outages; when the broker is back, let it recover, then resend recent events.

        An outage is `misses` pings in a row that fail: one slow answer on a busy machine is
        not one, and would resend every recent event. It outlives every error (a database
        that is down too, a recovery that fails): each round starts again, and its state is
        in /ready and `eventkit_broker_up`.
        """
        down_since: datetime | None = None
        first_miss: datetime | None = None
        missed = 0
        while True:
            await asyncio.sleep(every)
            try:
                answered = await self.transport.ping()
            except Exception:
                answered = False
            missed = 0 if answered else missed + 1
            if missed == 1:
                first_miss = datetime.now(UTC)
            up = missed < misses
            self.broker_up = up
            BROKER_UP.set(1 if up else 0)
            if not up and down_since is None:
                down_since = first_miss
                log.warning("broker unreachable; events wait in the outbox")
            elif answered and down_since is not None:
                try:
                    await self.transport.recover()
                    since = down_since - timedelta(seconds=self.settings.OUTBOX_RESEND_SECONDS)
                    resent = await self.relay.resend_since(since)
                    log.info("broker back; resending %d events sent since %s", resent, since)
                    # A send that was stuck in the outage may complete after that: once more.
                    await asyncio.sleep(5 * every)
                    await self.relay.resend_since(down_since)
                except Exception:
                    log.warning("broker back, but recovery failed; trying again", exc_info=True)
                    continue
                down_since = None

    async def prune(self) -> dict[str, int]:
        """Delete inbox rows and sent outbox rows past their retention; returns how many."""
        now = datetime.now(UTC)
        inbox_before = now - timedelta(seconds=self.settings.INBOX_RETENTION_SECONDS)
        pruned = {"inbox": 0, "outbox": 0}
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(ProcessedEvent).where(ProcessedEvent.processed_at < inbox_before)
            )
            pruned["inbox"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
            if self.settings.OUTBOX_RETENTION_SECONDS is not None:
                sent_before = now - timedelta(seconds=self.settings.OUTBOX_RETENTION_SECONDS)
                result = await session.execute(
                    delete(OutboxMessage).where(OutboxMessage.sent_at < sent_before)
                )
                pruned["outbox"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
        return pruned

    async def _prune_periodically(self, every: float = 600.0) -> None:
        while True:
            try:
                pruned = await self.prune()
                if any(pruned.values()):
                    log.info("retention: pruned %(inbox)d inbox and %(outbox)d outbox rows", pruned)
            except Exception:
                log.warning("retention: could not prune; trying again later", exc_info=True)
            await asyncio.sleep(every)

    async def stop(self) -> None:
        # Each background task ends before what it uses closes: one cancelled mid-query and
        # left running raced the pool's disposal, and could wait on a closed connection.
        tasks = [t for t in (self._connector, self._watchdog, self._pruner) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.relay.stop()
        for worker in self.workers:
            await worker.stop()
        if self.connected.is_set():
            await self.transport.stop()
        await self.db.dispose()

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state: `database` and `broker` are "up" or "down"."""
        try:
            await asyncio.wait_for(self.db.ping(), timeout=2.0)
            database = "up"
        except Exception:
            database = "down"
        broker = "up" if self.connected.is_set() and self.broker_up else "down"
        if broker == "up":  # the watchdog's last look may be a second old: look again
            try:
                broker = "up" if await self.transport.ping() else "down"
            except Exception:
                broker = "down"
        return {"database": database, "broker": broker}

    def needs(self, states: dict[str, str]) -> list[str]:
        """What is down that this service cannot do its job without.

        A publisher's writes reach the outbox while the broker is down, so it needs only
        its database; a consumer needs its broker too.
        """
        needed = ["database", "broker"] if self.consumer is not None else ["database"]
        return [name for name in needed if states[name] != "up"]


def _check_against_roster(spec: ServiceSpec, subscriptions: Subscriptions | None) -> None:
    """The code's handlers and the roster must name the same streams."""
    handled = set(subscriptions.streams) if subscriptions else set()
    listed = set(spec.subscribes)
    if handled != listed:
        raise ValueError(
            f"service {spec.name}: the roster says it subscribes to {sorted(listed)}, "
            f"its handlers take {sorted(handled)}; make them agree (libs/contracts)"
        )
