"""The pause a rebuild puts on live consumption, seen by every replica of the service.

It is one row in the service's database. A rebuild takes it under a holder id of its own,
with `paused_until` as a lease it renews while it works; only its holder renews or
releases it. Each consumer's batch transaction reads the row first. On PostgreSQL the
batch reads it with FOR SHARE and the rebuild sets it with an UPDATE, so the rebuild waits
for batches in flight on every replica and no batch starts after it.

The read model is whole only once a rebuild has finished: a rebuild records, as it takes
the pause, why the model would not be whole if it stopped (`failure`), and clears that
only when it succeeds. So a rebuild that fails, or whose process dies, leaves consumption
paused and the read routes answering 503 with the reason (`unavailable`), on every
replica, until a rebuild succeeds.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import DateTime, Integer, String, Text, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit import clock
from eventkit.db import Base, Database

# How long a rebuild's pause lasts unless renewed, on eventkit.clock as the consumer's other
# waits are: a rebuild that failed without releasing its pause (the database went down under
# it) blocks the next one until then, and the simulation's time must reach that end.
LEASE = timedelta(seconds=60)
WHOLE = "whole"  # readiness' word for a read model no rebuild is missing from


class ConsumerPause(Base):
    __tablename__ = "consumer_pause"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # one row: 1
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The rebuild that holds (or last held) the pause: only it renews or releases it.
    holder: Mapped[str | None] = mapped_column(String(200))
    # Why the read model is not whole: set as a rebuild starts, cleared when one succeeds.
    failure: Mapped[str | None] = mapped_column(Text)


class Paused(Exception):
    """A rebuild is running, or the last one did not finish: the batch waits."""


class LeaseLost(Exception):
    """Another rebuild took the pause (this one's lease ran out): this one must stop."""


# The pause's state, read by every batch: built once, and its columns rather than the ORM
# object a session would track.
_STATE = select(ConsumerPause.paused_until, ConsumerPause.holder, ConsumerPause.failure).where(
    ConsumerPause.id == 1
)
_STATE_SHARED = _STATE.with_for_update(read=True)


def new_holder() -> str:
    """A rebuild's own id, readable in the reasons it leaves: host, process and a nonce."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


async def check_running(session: AsyncSession) -> None:
    """Raise Paused while a rebuild runs or the read model is not whole (first statement of
    a batch)."""
    row = (await session.execute(_STATE_SHARED)).first()
    reason = None if row is None else _unavailable(*row)
    if reason is not None:
        raise Paused(reason)


async def unavailable(db: Database) -> str | None:
    """Why the read model cannot be served now (a rebuild runs, or failed); None if whole."""
    async with db.sessions() as session:
        row = (await session.execute(_STATE)).first()
    return None if row is None else _unavailable(*row)


async def take(db: Database, holder: str) -> bool:
    """Pause live consumption on every replica for LEASE under `holder`; False if another
    rebuild holds it. The read model counts as not whole from here until `release` without
    a failure."""
    now = clock.utcnow()
    started = f"a rebuild begun at {now.isoformat(timespec='seconds')} by {holder} did not finish"
    values = {"paused_until": now + LEASE, "holder": holder, "failure": started}
    free = or_(ConsumerPause.paused_until.is_(None), ConsumerPause.paused_until < now)
    change = update(ConsumerPause).where(ConsumerPause.id == 1, free).values(**values)
    async with db.transaction() as session:
        changed = cast(CursorResult[Any], await session.execute(change))
        if changed.rowcount == 1:
            return True
        if await session.get(ConsumerPause, 1) is not None:
            return False
        # tables made by create_all (tests), not by the migrations: no row yet
        session.add(ConsumerPause(id=1, **values))
        return True


async def renew(db: Database, holder: str) -> None:
    """Extend `holder`'s lease; LeaseLost if another rebuild has taken the pause since."""
    change = (
        update(ConsumerPause)
        .where(ConsumerPause.id == 1, ConsumerPause.holder == holder)
        .values(paused_until=clock.utcnow() + LEASE)
    )
    async with db.transaction() as session:
        changed = cast(CursorResult[Any], await session.execute(change))
    if changed.rowcount != 1:
        raise LeaseLost(f"another rebuild took over from {holder} (its lease ran out)")


async def release(db: Database, holder: str, failure: str | None = None) -> None:
    """End `holder`'s pause: the read model is whole again, or not, for `failure`'s reason.

    A holder that lost the pause changes nothing (the pause is the new holder's) and gets
    LeaseLost: its rebuild did not end on its own pause, so it must not answer that it
    succeeded. (One with nothing to replay never renewed, so only here could it learn it.)
    """
    change = (
        update(ConsumerPause)
        .where(ConsumerPause.id == 1, ConsumerPause.holder == holder)
        .values(paused_until=None, failure=failure)
    )
    async with db.transaction() as session:
        changed = cast(CursorResult[Any], await session.execute(change))
    if changed.rowcount != 1:
        raise LeaseLost(f"another rebuild took over from {holder} (its lease ran out)")


def _unavailable(
    paused_until: datetime | None, holder: str | None, failure: str | None
) -> str | None:
    if paused_until is not None and _aware(paused_until) > clock.utcnow():
        until = _aware(paused_until).isoformat(timespec="seconds")
        by = f" by {holder}" if holder else ""
        return f"a rebuild{by} holds the read model (its lease runs until {until})"
    if failure is not None:
        return f"the read model is incomplete: {failure}; a rebuild that succeeds restores it"
    return None


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
