"""How each user event changes billing's accounts."""

from sqlalchemy.ext.asyncio import AsyncSession

from billing_service.models import Account
from eventkit import Envelope


async def apply_user_event(session: AsyncSession, event: Envelope) -> None:
    data = event.data
    if event.type == "UserCreated":
        session.add(Account(user_id=data["user_id"], email=data["email"], status="active"))
        return
    account = await session.get(Account, data["user_id"])
    if account is None:
        # One user's events are ordered, so its UserCreated has not been applied: retry.
        raise LookupError(f"{event.type} for unknown account {data['user_id']}")
    match event.type:
        case "EmailChanged":
            account.email = data["new_email"]
        case "UserDeactivated":
            account.status = "deactivated"
