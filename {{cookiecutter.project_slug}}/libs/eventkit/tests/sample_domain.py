"""A small system of eventkit's own for its tests: one stream of `things` events.

eventkit knows no domain, so its tests bring one: `source` publishes `things`, and the
consumers a test names subscribe to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import (
    EventData,
    EventRegistry,
    EventType,
    Roster,
    ServiceSpec,
    Subscriptions,
    new_event,
)
from eventkit.consumer import Consumer
from eventkit.db import Database
from eventkit.envelope import Envelope
from eventkit.transports import Transport

THINGS = "things"


class Happened(EventData):
    thing_id: str
    note: str = ""


class Vanished(EventData):
    thing_id: str


def things_registry() -> EventRegistry:
    return EventRegistry(
        [EventType("Happened", THINGS, 1, Happened), EventType("Vanished", THINGS, 1, Vanished)]
    )


def things_roster(*consumers: str, events: EventRegistry | None = None) -> Roster:
    """`source` publishes `things`; each of `consumers` subscribes to it."""
    return Roster(
        (
            ServiceSpec("source", 9001, publishes=(THINGS,)),
            *(
                ServiceSpec(name, 9002 + n, subscribes=(THINGS,))
                for n, name in enumerate(consumers)
            ),
        ),
        events or things_registry(),
    )


def happened(thing_id: str = "t1", note: str = "") -> Envelope:
    return new_event(
        "Happened", {"thing_id": thing_id, "note": note}, source="source", aggregate_id=thing_id
    )


def vanished(thing_id: str = "t1") -> Envelope:
    return new_event("Vanished", {"thing_id": thing_id}, source="source", aggregate_id=thing_id)


def attach_recorder(db: Database, transport: Transport) -> list[str]:
    """A `probe` consumer of `things` on `transport`; the list fills with applied thing ids."""
    applied: list[str] = []
    subscriptions = Subscriptions()

    @subscriptions.on_message(THINGS)
    async def on_thing(event: Envelope, session: AsyncSession) -> None:
        applied.append(event.data["thing_id"])

    Consumer("probe", subscriptions, things_registry(), db, transport).attach()
    return applied


class DatabaseDown(Database):
    """A database that, while `down`, refuses connections as a stopped server does."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = False
        self.refused = 0

    def _refuse(self) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        self._refuse()
        async with super().transaction() as session:
            yield session

    async def ping(self) -> None:
        self._refuse()
        await super().ping()
