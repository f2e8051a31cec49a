"""Notification's subscribers."""

from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Consumer, Envelope
from notification_service import projections
from notification_service.sender import LogSender

consumer = Consumer("notification")
sender = LogSender()


@consumer.on_message("user.events")
async def on_user_event(event: Envelope, session: AsyncSession) -> None:
    await projections.apply_user_event(session, event, sender)
