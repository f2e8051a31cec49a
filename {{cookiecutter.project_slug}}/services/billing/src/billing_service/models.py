"""Billing's read model of accounts, built from user events."""

from decimal import Decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class Account(Base):
    __tablename__ = "accounts"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20))
    invoices: Mapped[int] = mapped_column(default=0)
    invoiced_total: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
