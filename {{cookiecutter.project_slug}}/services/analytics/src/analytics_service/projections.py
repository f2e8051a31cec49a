"""How each event changes the counters."""

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_service.models import EventCount, Revenue
from eventkit import Envelope


async def count(session: AsyncSession, event: Envelope) -> None:
    row = await session.get(EventCount, event.type)
    if row is None:
        session.add(EventCount(type=event.type, count=1))
    else:
        row.count += 1
    if event.type == "InvoiceIssued":
        revenue = await session.get(Revenue, 1)
        if revenue is None:
            session.add(Revenue(id=1, total=Decimal(event.data["amount"])))
        else:
            revenue.total += Decimal(event.data["amount"])
