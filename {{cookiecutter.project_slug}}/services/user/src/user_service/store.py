"""The event store: reading a user's events and appending new ones.

Appending also stages each event in the outbox, in the same transaction, so what
is stored is exactly what gets published.
"""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import USER_EVENTS
from eventkit import Envelope, insert_into_outbox
from eventkit.db import table_of
from user_service.domain import User
from user_service.models import StoredEvent

_APPEND = insert(table_of(StoredEvent))


async def load(
    session: AsyncSession,
    user_id: str,
    up_to: int | None = None,
    *,
    after: int = 0,
    limit: int | None = None,
) -> list[Envelope]:
    """The user's events in order: those after version `after` (up to `up_to`), at most `limit`."""
    query = select(StoredEvent).where(StoredEvent.stream_id == user_id)
    if up_to is not None:
        query = query.where(StoredEvent.version <= up_to)
    if after:
        query = query.where(StoredEvent.version > after)
    rows = (await session.scalars(query.order_by(StoredEvent.version).limit(limit))).all()
    return [_envelope(row) for row in rows]


async def exists(session: AsyncSession, user_id: str) -> bool:
    query = select(StoredEvent.version).where(StoredEvent.stream_id == user_id).limit(1)
    return (await session.scalar(query)) is not None


async def load_user(session: AsyncSession, user_id: str) -> User | None:
    events = await load(session, user_id)
    return User.replay(user_id, events) if events else None


async def save(session: AsyncSession, user: User) -> None:
    """Append the user's pending events after the version they were decided on, each with
    its outbox row: a statement for each table, run now (no ORM unit of work: this runs on
    every write request).

    Two writers that decided on the same version both insert the same (stream_id, version);
    the unique constraint lets one commit and fails the other.
    """
    if not user.pending:  # a change that changed nothing
        return
    first = user.version - len(user.pending) + 1
    rows = [
        {
            "stream_id": user.id,
            "version": version,
            "event_id": str(event.id),
            "type": event.type,
            "schema_version": event.version,
            "data": event.data,
            "metadata": {
                "source": event.source,
                "correlation_id": event.correlation_id,
                "causation_id": event.causation_id,
            },
            "timestamp": event.timestamp,
        }
        for version, event in enumerate(user.pending, start=first)
    ]
    await session.execute(_APPEND, rows)
    await insert_into_outbox(session, USER_EVENTS, user.pending)
    user.pending.clear()


def _envelope(row: StoredEvent) -> Envelope:
    return Envelope(
        id=row.event_id,
        type=row.type,
        version=row.schema_version,
        timestamp=row.timestamp,
        source=row.meta["source"],
        correlation_id=row.meta.get("correlation_id"),
        causation_id=row.meta.get("causation_id"),
        aggregate_id=row.stream_id,
        sequence=row.version,
        data=row.data,
    )
