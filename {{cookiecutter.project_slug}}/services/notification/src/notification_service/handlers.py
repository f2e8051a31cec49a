"""Notification's subscribers, bound to the sender they deliver through."""

from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Consumer, Envelope
from notification_service import projections
from notification_service.sender import Sender


def build_consumer(sender: Sender) -> Consumer:
    consumer = Consumer("notification")

    @consumer.on_message("user.events")
    async def on_user_event(event: Envelope, session: AsyncSession) -> None:
        await projections.apply_user_event(session, event, sender)

    @consumer.on_message("billing.events")
    async def on_billing_event(event: Envelope, session: AsyncSession) -> None:
        await projections.apply_billing_event(session, event, sender)

    return consumer
