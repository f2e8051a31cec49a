"""Analytics' subscribers: every event of every stream is counted."""

from sqlalchemy.ext.asyncio import AsyncSession

from analytics_service import projections
from eventkit import Consumer, Envelope

consumer = Consumer("analytics")


@consumer.on_message("user.events")
async def on_user_event(event: Envelope, session: AsyncSession) -> None:
    await projections.count(session, event)


@consumer.on_message("billing.events")
async def on_billing_event(event: Envelope, session: AsyncSession) -> None:
    await projections.count(session, event)
