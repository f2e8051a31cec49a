"""HTTP routes of the user service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from pydantic import BaseModel, EmailStr, Field, model_validator
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Kit
from eventkit.db import table_of
from eventkit.inputs import DEFAULT_LIMIT, IdInPath, Limit, PositionAfter, text
from user_service import store
from user_service.domain import RuleViolation, User
from user_service.models import UserEmail

router = APIRouter(tags=["users"])
# Names with control characters (NUL, CR/LF, line separators) are refused with a 422: they
# would break storage or email headers downstream.
Name = Annotated[str, text(min_length=1, max_length=200)]
MAX_VERSION = 2**31 - 1
_CLAIM = insert(table_of(UserEmail))


class NewUser(BaseModel):
    name: Name
    email: EmailStr
    locale: str = Field(default="en", pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", examples=["en", "pt-BR"])


class UserChange(BaseModel):
    name: Name | None = None
    email: EmailStr | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UserChange:
        if self.name is None and self.email is None:
            raise ValueError("give at least one of name, email")
        return self


class UserOut(BaseModel):
    id: str
    name: str
    email: str
    status: str
    version: int

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id, name=user.name, email=user.email, status=user.status, version=user.version
        )


IfMatch = Annotated[
    str | None,
    Header(
        max_length=40,
        description="The version the change was decided on; 409 if it is not current.",
    ),
]


@router.post("/users", status_code=201, response_model=UserOut)
async def create_user(body: NewUser, kit: Kit) -> UserOut:
    user = User.create(str(uuid.uuid4()), body.name, str(body.email), body.locale)
    try:
        # The email's primary key refuses a second holder, so there is nothing to look up
        # first: the claim's insert fails instead.
        async with kit.transaction() as session:
            await session.execute(_CLAIM, {"email": user.email.lower(), "user_id": user.id})
            await store.save(session, user)
    except IntegrityError:
        raise HTTPException(409, detail=f"email {user.email} is already taken") from None
    return UserOut.of(user)


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(
    user_id: IdInPath, kit: Kit, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
) -> UserOut:
    async with kit.db.sessions() as session:
        events = await store.load(session, user_id, up_to=version)
    if not events:
        raise HTTPException(404, detail=f"user {user_id} not found")
    user = User.replay(user_id, events)
    if version is not None and user.version < version:
        raise HTTPException(404, detail=f"user {user_id} has no version {version}")
    return UserOut.of(user)


@router.patch("/users/{user_id}", response_model=UserOut)
async def change_user(
    user_id: IdInPath, body: UserChange, kit: Kit, if_match: IfMatch = None
) -> UserOut:
    email = str(body.email) if body.email is not None else None
    return await _decide(kit, user_id, if_match, lambda user: user.change(body.name, email))


@router.delete("/users/{user_id}", response_model=UserOut)
async def deactivate_user(user_id: IdInPath, kit: Kit, if_match: IfMatch = None) -> UserOut:
    return await _decide(kit, user_id, if_match, lambda user: user.deactivate())


@router.get("/users/{user_id}/events")
async def user_events(
    user_id: IdInPath, kit: Kit, after: PositionAfter = 0, limit: Limit = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    """The user's event envelopes, oldest first, a page at a time: `after` a `sequence`."""
    async with kit.db.sessions() as session:
        events = await store.load(session, user_id, after=after, limit=limit)
        if not events and not await store.exists(session, user_id):
            raise HTTPException(404, detail=f"user {user_id} not found")
    return [event.model_dump(mode="json") for event in events]


async def _decide(kit: Kit, user_id: str, if_match: str | None, command: Any) -> UserOut:
    """Load, check the expected version, run the command, append its events; 409 on any race."""
    try:
        async with kit.transaction() as session:
            user = await store.load_user(session, user_id)
            if user is None:
                raise HTTPException(404, detail=f"user {user_id} not found")
            if if_match is not None and if_match.strip('"W/ ') != str(user.version):
                raise HTTPException(
                    409, detail=f"version conflict: If-Match {if_match}, current {user.version}"
                )
            old_email = user.email
            try:
                command(user)
            except RuleViolation as exc:
                raise HTTPException(409, detail=str(exc)) from None
            if user.email.lower() != old_email.lower():
                await _claim_email(session, user.email, user.id)
                await session.execute(delete(UserEmail).where(UserEmail.email == old_email.lower()))
            await store.save(session, user)
    except IntegrityError:
        raise HTTPException(
            409, detail=f"user {user_id} was changed concurrently; read it again and retry"
        ) from None
    return UserOut.of(user)


async def _claim_email(session: AsyncSession, email: str, user_id: str) -> None:
    """Reserve `email` for `user_id` in this transaction; 409 if another user holds it."""
    holder = await session.scalar(select(UserEmail.user_id).where(UserEmail.email == email.lower()))
    if holder is not None and holder != user_id:
        raise HTTPException(409, detail=f"email {email} is already taken")
    if holder is None:
        await session.execute(_CLAIM, {"email": email.lower(), "user_id": user_id})
