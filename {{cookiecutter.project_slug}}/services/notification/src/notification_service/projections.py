"""Which events produce which notification; recording it is what sends it (dispatch.py)."""

from __future__ import annotations

from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope
from notification_service.dispatch import Delivery
from notification_service.models import Notification, Recipient


async def apply_user_event(session: AsyncSession, event: Envelope, delivery: Delivery) -> None:
    data = event.data
    if event.type == "UserCreated":
        recipient = Recipient(user_id=data["user_id"], name=data["name"], email=data["email"])
        session.add(recipient)
        await _notify(session, delivery, event, recipient, "welcome", f"Welcome, {recipient.name}!")
        return
    recipient = await _recipient(session, data["user_id"], event)
    match event.type:
        case "NameChanged":
            recipient.name = data["new_name"]
        case "EmailChanged":
            recipient.email = data["new_email"]
            await _notify(
                session, delivery, event, recipient, "email_changed", "Your email address changed"
            )
        case "UserDeactivated":
            await _notify(
                session, delivery, event, recipient, "goodbye", f"Goodbye, {recipient.name}"
            )


async def apply_invoice_issued(session: AsyncSession, event: Envelope, delivery: Delivery) -> None:
    recipient = await _recipient(session, event.data["user_id"], event)
    subject = f"Invoice {event.data['invoice_id']}: {event.data['amount']}"
    await _notify(session, delivery, event, recipient, "invoice_issued", subject)


async def _recipient(session: AsyncSession, user_id: str, event: Envelope) -> Recipient:
    recipient = await session.get(Recipient, user_id)
    if recipient is None:
        # Its UserCreated has not been applied yet (another stream may be ahead): retry.
        raise LookupError(f"{event.type} for unknown recipient {user_id}")
    return recipient


async def _notify(
    session: AsyncSession,
    delivery: Delivery,
    event: Envelope,
    recipient: Recipient,
    kind: str,
    subject: str,
) -> None:
    session.add(
        Notification(
            user_id=recipient.user_id,
            kind=kind,
            channel=delivery.channel,
            recipient=recipient.email,
            subject=subject,
            event_id=str(event.id),
            created_at=event.timestamp,
            sent_at=event.timestamp if delivery.replay else None,
        )
    )
    if not delivery.replay:  # the email leaves once this transaction has committed
        orm_event.listen(session.sync_session, "after_commit", lambda _: delivery.wake(), once=True)
