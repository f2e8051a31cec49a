"""Notification's subscribers, bound to how their notifications are delivered."""

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import BILLING_EVENTS, USER_EVENTS
from eventkit import Envelope, Subscriptions
from notification_service import projections
from notification_service.dispatch import Channel
from notification_service.models import Notification, Recipient


def build_subscriptions(channel: Channel) -> Subscriptions:
    # A rebuild empties these; the deliveries (each email's state) it keeps.
    subscriptions = Subscriptions(read_models=[Notification, Recipient])

    @subscriptions.on_message(USER_EVENTS)
    async def on_user_event(event: Envelope, session: AsyncSession) -> None:
        await projections.apply_user_event(session, event, channel)

    @subscriptions.on_message(BILLING_EVENTS, types=["InvoiceIssued"])
    async def on_invoice_issued(event: Envelope, session: AsyncSession) -> None:
        await projections.apply_invoice_issued(session, event, channel)

    return subscriptions
