"""Analytics' subscribers: every event of every stream is counted."""

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_service import projections
from analytics_service.models import EventCount, Revenue
from contracts import BILLING_EVENTS, USER_EVENTS
from eventkit import Envelope, Subscriptions

subscriptions = Subscriptions(read_models=[EventCount, Revenue])


@subscriptions.on_batch(USER_EVENTS)
@subscriptions.on_batch(BILLING_EVENTS)
async def count_events(events: list[Envelope], session: AsyncSession) -> None:
    await projections.count(session, events)
