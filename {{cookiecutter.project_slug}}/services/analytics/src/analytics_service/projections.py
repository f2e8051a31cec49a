"""How a batch of events changes the counters.

A batch is folded first (a count per type, the revenue it adds), then written with one
UPDATE per counter, so replicas of this service consuming different partitions (or taking
a queue over from one another) never lose one another's counts.
"""

from collections import Counter
from decimal import Decimal

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_service.models import EventCount, Revenue
from eventkit import Envelope


async def count(session: AsyncSession, events: list[Envelope]) -> None:
    for event_type, seen in Counter(event.type for event in events).items():
        await _increment(
            session, EventCount, EventCount.type == event_type, "count", seen, type=event_type
        )
    invoiced = sum(
        (Decimal(e.data["amount"]) for e in events if e.type == "InvoiceIssued"), Decimal(0)
    )
    if invoiced:
        await _increment(session, Revenue, Revenue.id == 1, "total", invoiced, id=1)


async def _increment(
    session: AsyncSession,
    model: type,
    where: ColumnElement[bool],
    column: str,
    by: object,
    **key: object,
) -> None:
    """Add `by` to the row's column; create the row on first use.

    Two first uses at once: one insert fails on the primary key, and the consumer's
    retry then finds the row.
    """
    field = getattr(model, column)
    change = update(model).where(where).values({column: field + by})
    result = await session.execute(change.execution_options(synchronize_session=False))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(model(**key, **{column: by}))
        await session.flush()
