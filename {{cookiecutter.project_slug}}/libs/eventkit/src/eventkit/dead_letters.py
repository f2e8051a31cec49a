"""Dead letters: events this service gave up on, kept so they can be listed and replayed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(36), index=True)
    event_type: Mapped[str | None] = mapped_column(String(100))
    stream: Mapped[str] = mapped_column(String(200))
    # The partition key it was published with (its aggregate id); replay uses it again.
    key: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int]
    failed_at: Mapped[datetime] = mapped_column()
    # The message exactly as received, so it can be replayed byte for byte.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
