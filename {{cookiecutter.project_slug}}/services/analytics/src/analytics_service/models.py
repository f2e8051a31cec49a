"""Analytics' read model: a count per event type and the invoiced revenue."""

from decimal import Decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class EventCount(Base):
    __tablename__ = "event_counts"

    type: Mapped[str] = mapped_column(String(100), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


class Revenue(Base):
    __tablename__ = "revenue"

    id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[Decimal] = mapped_column(Numeric(16, 2), default=Decimal("0"))
