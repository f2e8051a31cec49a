"""HTTP routes of the billing service."""

from decimal import Decimal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from billing_service.models import Account
from eventkit import Kit

router = APIRouter(tags=["billing"])


class AccountOut(BaseModel):
    user_id: str
    email: str
    status: str
    invoices: int
    invoiced_total: Decimal


@router.get("/accounts/{user_id}", response_model=AccountOut)
async def get_account(user_id: str, kit: Kit) -> AccountOut:
    async with kit.db.sessions() as session:
        account = await session.get(Account, user_id)
    if account is None:
        raise HTTPException(404, detail=f"no account for user {user_id}")
    return AccountOut.model_validate(account, from_attributes=True)
