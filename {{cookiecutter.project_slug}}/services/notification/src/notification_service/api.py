"""HTTP routes of the notification service."""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from eventkit import Kit
from eventkit.deps import READ_MODEL
from eventkit.inputs import DEFAULT_LIMIT, IdAfter, IdInQuery, Limit, page_after
from notification_service.models import WAITING, Delivery, Notification

router = APIRouter(tags=["notifications"], dependencies=[READ_MODEL])


class NotificationOut(BaseModel):
    id: str
    user_id: str
    kind: str
    channel: str
    recipient: str
    event_id: str
    created_at: datetime
    delivery: Literal["waiting", "sent", "failed"]
    sent_at: datetime | None
    failure: str | None  # why it failed, e.g. the server's "550 ... no such mailbox"


@router.get("/notifications", response_model=list[NotificationOut])
async def list_notifications(
    kit: Kit, user_id: IdInQuery = None, after: IdAfter = None, limit: Limit = DEFAULT_LIMIT
) -> list[NotificationOut]:
    """Oldest first, each with its email's delivery state; `after` is the id of the last
    notification of the previous page."""
    query = select(Notification)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    order = (Notification.created_at, Notification.id)
    async with kit.db.sessions() as session:
        rows = await page_after(session, query, order, after, limit)
        event_ids = [row.event_id for row in rows]
        deliveries = {
            d.event_id: d
            for d in await session.scalars(select(Delivery).where(Delivery.event_id.in_(event_ids)))
        }
    return [_out(row, deliveries.get(row.event_id)) for row in rows]


def _out(row: Notification, delivery: Delivery | None) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        channel=row.channel,
        recipient=row.recipient,
        event_id=row.event_id,
        created_at=row.created_at,
        delivery=delivery.state if delivery else WAITING,
        sent_at=delivery.sent_at if delivery else None,
        failure=delivery.failure if delivery else None,
    )
