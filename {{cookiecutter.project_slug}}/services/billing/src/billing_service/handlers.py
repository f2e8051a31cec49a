"""Billing's subscribers."""

from sqlalchemy.ext.asyncio import AsyncSession

from billing_service import projections
from eventkit import Consumer, Envelope

consumer = Consumer("billing")


@consumer.on_message("user.events")
async def on_user_event(event: Envelope, session: AsyncSession) -> None:
    await projections.apply_user_event(session, event)
