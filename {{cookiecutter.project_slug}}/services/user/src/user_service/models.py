"""The append-only event store, and the email index kept in the same transaction."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class StoredEvent(Base):
    """One event of one user; (stream_id, version) unique is the optimistic-concurrency guard."""

    __tablename__ = "event_store"
    __table_args__ = (UniqueConstraint("stream_id", "version", name="uq_stream_version"),)

    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int]
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    schema_version: Mapped[int]
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    timestamp: Mapped[datetime] = mapped_column()


class UserEmail(Base):
    """Which user holds an email: the primary key makes a second sign-up with it fail."""

    __tablename__ = "user_emails"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), index=True)
