"""HTTP routes of the billing service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from billing_service.models import Account, Invoice
from contracts import BILLING_EVENTS
from eventkit import Kit, add_to_outbox, new_event
from eventkit.deps import READ_MODEL
from eventkit.inputs import (
    DEFAULT_LIMIT,
    IdAfter,
    IdInPath,
    IdInQuery,
    Limit,
    page_after,
    text,
)

router = APIRouter(tags=["billing"])
Money = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]


class AccountOut(BaseModel):
    user_id: str
    email: str
    status: str
    invoices: int
    invoiced_total: Decimal


class NewInvoice(BaseModel):
    user_id: str = text(min_length=1, max_length=100)
    amount: Money
    description: str = text(default="", max_length=500)


class InvoiceOut(BaseModel):
    id: str
    user_id: str
    amount: Decimal
    description: str
    status: str
    issued_at: datetime


# Accounts are the read model (a rebuild refills them); invoices are billing's own.
@router.get("/accounts/{user_id}", response_model=AccountOut, dependencies=[READ_MODEL])
async def get_account(user_id: IdInPath, kit: Kit) -> AccountOut:
    async with kit.db.sessions() as session:
        account = await session.get(Account, user_id)
        count, total = (
            await session.execute(
                select(func.count(Invoice.id), func.coalesce(func.sum(Invoice.amount), 0)).where(
                    Invoice.user_id == user_id
                )
            )
        ).one()
    if account is None:
        raise HTTPException(404, detail=f"no account for user {user_id}")
    return AccountOut(
        user_id=account.user_id,
        email=account.email,
        status=account.status,
        invoices=count,
        invoiced_total=Decimal(total).quantize(Decimal("0.01")),
    )


@router.post("/invoices", status_code=201, response_model=InvoiceOut, dependencies=[READ_MODEL])
async def issue_invoice(body: NewInvoice, kit: Kit) -> InvoiceOut:
    async with kit.transaction() as session:
        account = await session.get(Account, body.user_id)
        if account is None:
            raise HTTPException(404, detail=f"no account for user {body.user_id}")
        if account.status != "active":
            raise HTTPException(409, detail=f"user {body.user_id} is {account.status}")
        invoice = Invoice(
            id=str(uuid.uuid4()),
            user_id=body.user_id,
            amount=body.amount,
            description=body.description,
            status="issued",
            issued_at=datetime.now(UTC),
        )
        session.add(invoice)
        event = new_event(
            "InvoiceIssued",
            {"invoice_id": invoice.id, "user_id": invoice.user_id, "amount": str(body.amount)},
            source=kit.settings.SERVICE_NAME,
            aggregate_id=invoice.id,
            sequence=1,
        )
        add_to_outbox(session, BILLING_EVENTS, event)
    return InvoiceOut.model_validate(invoice, from_attributes=True)


@router.get("/invoices", response_model=list[InvoiceOut])
async def list_invoices(
    kit: Kit, user_id: IdInQuery = None, after: IdAfter = None, limit: Limit = DEFAULT_LIMIT
) -> list[InvoiceOut]:
    """Oldest first; `after` is the id of the last invoice of the previous page."""
    query = select(Invoice)
    if user_id is not None:
        query = query.where(Invoice.user_id == user_id)
    async with kit.db.sessions() as session:
        rows = await page_after(session, query, (Invoice.issued_at, Invoice.id), after, limit)
    return [InvoiceOut.model_validate(row, from_attributes=True) for row in rows]
