"""HTTP routes of the notification service."""

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from eventkit import Kit
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
async def list_notifications(kit: Kit, user_id: str | None = None) -> list[NotificationOut]:
    query = select(Notification).order_by(Notification.created_at)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    async with kit.db.sessions() as session:
        rows = (await session.scalars(query)).all()
    return [NotificationOut.model_validate(row, from_attributes=True) for row in rows]
