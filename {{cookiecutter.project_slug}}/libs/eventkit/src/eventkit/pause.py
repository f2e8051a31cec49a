"""The pause a rebuild puts on live consumption, seen by every replica of the service.

It is a row in the service's database: a rebuild sets `paused_until` (a lease it renews
while it works, so a crashed rebuild does not pause the service for good), and each
consumer's batch transaction reads that row first. On PostgreSQL the batch reads it with
FOR SHARE and the rebuild sets it with an UPDATE, so the rebuild waits for batches in
flight on every replica and no batch starts after it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import DateTime, Integer, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base, Database

# How long a rebuild's pause lasts unless renewed.
LEASE = timedelta(seconds=60)


class ConsumerPause(Base):
    __tablename__ = "consumer_pause"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # one row: 1
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Paused(Exception):
    """A rebuild is running: the batch waits and tries again."""


async def check_running(session: AsyncSession) -> None:
    """Raise Paused while a rebuild holds the pause (first statement of a batch)."""
    query = select(ConsumerPause.paused_until).where(ConsumerPause.id == 1)
    until = await session.scalar(query.with_for_update(read=True))
    if until is not None and _aware(until) > datetime.now(UTC):
        raise Paused(f"a rebuild holds live consumption until {until.isoformat()}")


async def hold(db: Database, *, renew: bool) -> bool:
    """Pause live consumption on every replica for LEASE; False if another holds it.

    `renew`: extend the pause this rebuild already holds.
    """
    now = datetime.now(UTC)
    change = update(ConsumerPause).where(ConsumerPause.id == 1).values(paused_until=now + LEASE)
    if not renew:  # take it only if free (or a crashed rebuild's lease ran out)
        change = change.where(
            or_(ConsumerPause.paused_until.is_(None), ConsumerPause.paused_until < now)
        )
    async with db.transaction() as session:
        changed = cast(CursorResult[Any], await session.execute(change))
        if changed.rowcount == 1:
            return True
        if await session.get(ConsumerPause, 1) is not None:
            return False
        # tables made by create_all (tests), not by the migrations: no row yet
        session.add(ConsumerPause(id=1, paused_until=now + LEASE))
        return True


async def release(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(ConsumerPause).where(ConsumerPause.id == 1).values(paused_until=None)
        )


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
