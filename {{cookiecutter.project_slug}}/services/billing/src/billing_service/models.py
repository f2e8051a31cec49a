"""Billing's tables: accounts (a read model built from user events) and invoices (its own)."""

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from eventkit.db import Base


class Account(Base):
    """What billing knows of a user; rebuilt from user events, so it holds nothing else."""

    __tablename__ = "accounts"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20))


class Invoice(Base):
    """Billing's own record, not a read model: a rebuild leaves it, and it publishes
    InvoiceIssued through the outbox."""

    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    description: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(20), default="issued")
    issued_at: Mapped[datetime]
