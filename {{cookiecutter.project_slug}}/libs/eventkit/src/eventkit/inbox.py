"""Idempotent inbox: processed event ids, written in the same transaction as the read model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class ProcessedEvent(Base):
    __tablename__ = "inbox"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    stream: Mapped[str] = mapped_column(String(200))
    processed_at: Mapped[datetime] = mapped_column()
