"""Billing's subscribers."""

from sqlalchemy.ext.asyncio import AsyncSession

from billing_service import projections
from billing_service.models import Account
from contracts import USER_EVENTS
from eventkit import Envelope, Subscriptions

subscriptions = Subscriptions(read_models=[Account])


@subscriptions.on_message(USER_EVENTS)
async def on_user_event(event: Envelope, session: AsyncSession) -> None:
    await projections.apply_user_event(session, event)
