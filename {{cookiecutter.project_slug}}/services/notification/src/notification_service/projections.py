"""Which events produce which notification, and recording what was sent."""

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Envelope
from notification_service.models import Notification, Recipient
from notification_service.sender import Message, Sender


async def apply_user_event(session: AsyncSession, event: Envelope, sender: Sender) -> None:
    data = event.data
    if event.type == "UserCreated":
        session.add(Recipient(user_id=data["user_id"], name=data["name"], email=data["email"]))
        await _notify(session, sender, event, "welcome", data["email"], f"Welcome, {data['name']}!")


async def _notify(
    session: AsyncSession, sender: Sender, event: Envelope, kind: str, to: str, subject: str
) -> None:
    await sender.send(Message(to=to, subject=subject, body=subject))
    session.add(
        Notification(
            user_id=event.data["user_id"],
            kind=kind,
            channel=sender.channel,
            recipient=to,
            event_id=str(event.id),
            created_at=datetime.now(UTC),
        )
    )
