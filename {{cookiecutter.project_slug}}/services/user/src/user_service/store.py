"""Reading and appending a user's events; every append also stages them in the outbox."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope, add_to_outbox
from user_service.models import StoredEvent


async def load(session: AsyncSession, user_id: str, up_to: int | None = None) -> list[Envelope]:
    query = select(StoredEvent).where(StoredEvent.stream_id == user_id)
    if up_to is not None:
        query = query.where(StoredEvent.version <= up_to)
    rows = (await session.scalars(query.order_by(StoredEvent.version))).all()
    return [_envelope(row) for row in rows]


def append(session: AsyncSession, user_id: str, version: int, event: Envelope) -> None:
    """Append `event` as `version` of the user's stream; a concurrent writer's flush fails."""
    session.add(
        StoredEvent(
            stream_id=user_id,
            version=version,
            event_id=str(event.id),
            type=event.type,
            schema_version=event.version,
            data=event.data,
            meta={
                "source": event.source,
                "correlation_id": event.correlation_id,
                "causation_id": event.causation_id,
            },
            timestamp=event.timestamp,
        )
    )
    add_to_outbox(session, event, key=user_id)


def _envelope(row: StoredEvent) -> Envelope:
    return Envelope(
        id=row.event_id,
        type=row.type,
        version=row.schema_version,
        timestamp=row.timestamp,
        source=row.meta["source"],
        correlation_id=row.meta.get("correlation_id"),
        causation_id=row.meta.get("causation_id"),
        data=row.data,
    )
