"""HTTP routes of the notification service."""

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from eventkit import Kit
from eventkit.inputs import DEFAULT_LIMIT, IdAfter, IdInQuery, Limit, page_after
from notification_service.models import Notification

router = APIRouter(tags=["notifications"])


class NotificationOut(BaseModel):
    id: str
    user_id: str
    kind: str
    channel: str
    recipient: str
    event_id: str
    created_at: datetime


@router.get("/notifications", response_model=list[NotificationOut])
async def list_notifications(
    kit: Kit, user_id: IdInQuery = None, after: IdAfter = None, limit: Limit = DEFAULT_LIMIT
) -> list[NotificationOut]:
    """Oldest first; `after` is the id of the last notification of the previous page."""
    query = select(Notification)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    order = (Notification.created_at, Notification.id)
    async with kit.db.sessions() as session:
        rows = await page_after(session, query, order, after, limit)
    return [NotificationOut.model_validate(row, from_attributes=True) for row in rows]
