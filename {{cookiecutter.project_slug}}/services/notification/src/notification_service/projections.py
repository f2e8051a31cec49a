"""Which events produce which notification; recording it is what sends it (dispatch.py)."""

from __future__ import annotations

from sqlalchemy import event as orm_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope
from eventkit.db import table_of
from notification_service.dispatch import Channel
from notification_service.models import WAITING, Delivery, Notification, Recipient


async def apply_user_event(session: AsyncSession, event: Envelope, channel: Channel) -> None:
    data = event.data
    if event.type == "UserCreated":
        recipient = Recipient(user_id=data["user_id"], name=data["name"], email=data["email"])
        session.add(recipient)
        await _notify(session, channel, event, recipient, "welcome", f"Welcome, {recipient.name}!")
        return
    recipient = await _recipient(session, data["user_id"], event)
    match event.type:
        case "NameChanged":
            recipient.name = data["new_name"]
        case "EmailChanged":
            recipient.email = data["new_email"]
            await _notify(
                session, channel, event, recipient, "email_changed", "Your email address changed"
            )
        case "UserDeactivated":
            await _notify(
                session, channel, event, recipient, "goodbye", f"Goodbye, {recipient.name}"
            )


async def apply_invoice_issued(session: AsyncSession, event: Envelope, channel: Channel) -> None:
    recipient = await _recipient(session, event.data["user_id"], event)
    subject = f"Invoice {event.data['invoice_id']}: {event.data['amount']}"
    await _notify(session, channel, event, recipient, "invoice_issued", subject)


async def _recipient(session: AsyncSession, user_id: str, event: Envelope) -> Recipient:
    recipient = await session.get(Recipient, user_id)
    if recipient is None:
        # Its UserCreated has not been applied yet (another stream may be ahead): retry.
        raise LookupError(f"{event.type} for unknown recipient {user_id}")
    return recipient


async def _notify(
    session: AsyncSession,
    channel: Channel,
    event: Envelope,
    recipient: Recipient,
    kind: str,
    subject: str,
) -> None:
    """Record the notification, and its email as due unless the event already has one.

    A rebuild replays events whose email was sent, is waiting, or was refused: their
    delivery rows outlive the rebuild and stay as they are. An event whose email was never
    recorded (it was still in the outbox, a retry or the dead letters) gets one, sent once.
    """
    fields = {
        "channel": channel.name,
        "recipient": recipient.email,
        "subject": subject,
        "created_at": event.timestamp,
    }
    session.add(
        Notification(user_id=recipient.user_id, kind=kind, event_id=str(event.id), **fields)
    )
    delivery = {"event_id": str(event.id), "state": WAITING, **fields}
    with session.no_autoflush:  # the batch's other rows are inserted together, later
        dialect = session.get_bind().dialect.name
        await session.execute(_DELIVERY_IF_ABSENT[dialect], delivery)
    if not session.info.get(_WAKES_DISPATCHER):  # once a transaction (a session holds one)
        session.info[_WAKES_DISPATCHER] = True
        # The emails leave once this transaction has committed.
        orm_event.listen(session.sync_session, "after_commit", lambda _: channel.wake(), once=True)


# In session.info: this session's commit will wake the dispatcher.
_WAKES_DISPATCHER = "notification.wakes_dispatcher"

# A delivery row unless the event has one; built once, for either database.
_DELIVERY_IF_ABSENT = {
    "postgresql": postgresql.insert(table_of(Delivery)).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(table_of(Delivery)).on_conflict_do_nothing(),
}
