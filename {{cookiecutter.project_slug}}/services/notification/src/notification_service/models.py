"""Notification's tables: the read model (who to write to, what was notified) and the
delivery state of each email, which a rebuild keeps."""

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base

WAITING, SENT, FAILED = "waiting", "sent", "failed"


class Recipient(Base):
    """Who to write to: the name and email the user events last gave, so a welcome and an
    invoice's mail need no call to the user service."""

    __tablename__ = "recipients"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))


class Notification(Base):
    """What the service decided to tell a user, once per event (`event_id` is unique); how
    its email fares is the Delivery's, which a rebuild keeps."""

    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[datetime] = mapped_column()


class Delivery(Base):
    """One email to send, by the event that called for it: written with its notification,
    and never emptied by a rebuild, so what was sent stays sent and what was not is still
    sent (dispatch.py). It holds what to send, so it needs nothing of the read model."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_state_created_at", "state", "created_at"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(10))  # WAITING, SENT or FAILED
    sent_at: Mapped[datetime | None] = mapped_column()
    # Why it failed: a permanent refusal (e.g. "550 5.1.1 no such mailbox").
    failure: Mapped[str | None] = mapped_column(Text)
