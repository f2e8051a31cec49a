"""How each event changes the counters.

Increments are single UPDATE statements, so replicas of this service consuming different
partitions (or competing for one queue) never lose one another's counts.
"""

from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_service.models import EventCount, Revenue
from eventkit import Envelope


async def count(session: AsyncSession, event: Envelope) -> None:
    await _increment(
        session, EventCount, EventCount.type == event.type, "count", 1, type=event.type
    )
    if event.type == "InvoiceIssued":
        amount = Decimal(event.data["amount"])
        await _increment(session, Revenue, Revenue.id == 1, "total", amount, id=1)


async def _increment(
    session: AsyncSession, model: type, where: object, column: str, by: object, **key: object
) -> None:
    """Add `by` to the row's column; create the row on first use.

    Two first uses at once: one insert fails on the primary key, and the pipeline's
    retry then finds the row.
    """
    field = getattr(model, column)
    result = await session.execute(update(model).where(where).values({column: field + by}))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(model(**key, **{column: by}))
        await session.flush()
