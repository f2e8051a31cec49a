"""HTTP routes of the user service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy.exc import IntegrityError

from eventkit import Kit, new_event
from user_service import store
from user_service.domain import User
from user_service.models import UserEmail

router = APIRouter(tags=["users"])


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr


class UserOut(BaseModel):
    id: str
    name: str
    email: str
    status: str
    version: int


def _out(user: User) -> UserOut:
    return UserOut(
        id=user.id, name=user.name, email=user.email, status=user.status, version=user.version
    )


@router.post("/users", status_code=201, response_model=UserOut)
async def create_user(body: NewUser, kit: Kit) -> UserOut:
    user_id = str(uuid.uuid4())
    email = str(body.email)
    event = new_event(
        "UserCreated",
        {"user_id": user_id, "name": body.name, "email": email},
        source=kit.settings.SERVICE_NAME,
    )
    try:
        async with kit.transaction() as session:
            session.add(UserEmail(email=email.lower(), user_id=user_id))
            store.append(session, user_id, 1, event)
    except IntegrityError:
        raise HTTPException(409, detail=f"email {email} is already taken") from None
    return _out(User.replay(user_id, [event]))


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(
    user_id: str, kit: Kit, version: Annotated[int | None, Query(ge=1)] = None
) -> UserOut:
    async with kit.db.sessions() as session:
        events = await store.load(session, user_id, up_to=version)
    if not events:
        raise HTTPException(404, detail=f"user {user_id} not found")
    user = User.replay(user_id, events)
    if version is not None and user.version < version:
        raise HTTPException(404, detail=f"user {user_id} has no version {version}")
    return _out(user)
