"""HTTP routes of the analytics service."""

from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from analytics_service.models import EventCount, Revenue
from eventkit import Kit
from eventkit.deps import READ_MODEL

router = APIRouter(tags=["analytics"], dependencies=[READ_MODEL])


class Stats(BaseModel):
    users_created: int
    users_active: int
    users_deactivated: int
    invoices_issued: int
    revenue_total: Decimal
    events_by_type: dict[str, int]


@router.get("/stats", response_model=Stats)
async def stats(kit: Kit) -> Stats:
    async with kit.db.sessions() as session:
        counts = {row.type: row.count for row in (await session.scalars(select(EventCount)))}
        revenue = await session.get(Revenue, 1)
    created = counts.get("UserCreated", 0)
    deactivated = counts.get("UserDeactivated", 0)
    return Stats(
        users_created=created,
        users_active=created - deactivated,
        users_deactivated=deactivated,
        invoices_issued=counts.get("InvoiceIssued", 0),
        revenue_total=revenue.total if revenue else Decimal("0.00"),
        events_by_type=counts,
    )
