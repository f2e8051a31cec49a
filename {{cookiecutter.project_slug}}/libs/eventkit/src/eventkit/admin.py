"""Admin calls of a consuming service: its dead letters, their replay, and rebuilds.

They need `Authorization: Bearer <ADMIN_TOKEN>` when ADMIN_TOKEN is set.
"""

from __future__ import annotations

import hmac
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException
from pydantic import BaseModel
from sqlalchemy import delete, select

from eventkit.consumer import DeadLetter
from eventkit.rebuild import rebuild
from eventkit.service import Kit


def require_admin(kit: Kit, authorization: Annotated[str | None, Header()] = None) -> None:
    token = kit.settings.ADMIN_TOKEN
    if not token:
        return
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, detail="admin call: send Authorization: Bearer <ADMIN_TOKEN>")
    if not hmac.compare_digest(authorization.removeprefix("Bearer ").strip(), token):
        raise HTTPException(403, detail="admin call: wrong admin token")


router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


class DeadLetterOut(BaseModel):
    event_id: str | None
    type: str | None
    error: str
    attempts: int
    failed_at: datetime
    topic: str
    payload: str


class ReplayRequest(BaseModel):
    event_ids: list[str] | None = None


@router.get("/dlq", response_model=list[DeadLetterOut])
async def list_dead_letters(kit: Kit) -> list[DeadLetterOut]:
    async with kit.db.sessions() as session:
        rows = await session.scalars(select(DeadLetter).order_by(DeadLetter.id))
        return [
            DeadLetterOut(
                event_id=row.event_id,
                type=row.event_type,
                error=row.error,
                attempts=row.attempts,
                failed_at=row.failed_at,
                topic=row.stream,
                payload=row.payload.decode(errors="replace"),
            )
            for row in rows
        ]


@router.post("/dlq/replay")
async def replay_dead_letters(
    kit: Kit, body: Annotated[ReplayRequest | None, Body()] = None
) -> dict[str, int]:
    """Republish dead letters to their stream (all, or those named) and drop them from the list."""
    query = select(DeadLetter).order_by(DeadLetter.id)
    if body is not None and body.event_ids is not None:
        query = query.where(DeadLetter.event_id.in_(body.event_ids))
    async with kit.db.sessions() as session:
        rows = (await session.scalars(query)).all()
    for row in rows:
        await kit.transport.publish(
            row.stream, row.payload, key=_key_of(row.payload), event_type=row.event_type or ""
        )
        async with kit.db.transaction() as session:
            await session.execute(delete(DeadLetter).where(DeadLetter.id == row.id))
    return {"replayed": len(rows)}


@router.post("/admin/rebuild")
async def rebuild_read_model(kit: Kit) -> dict[str, Any]:
    """Empty this service's read model and inbox, and replay every event it subscribes to."""
    if kit.pipeline is None or kit.replay_pipeline is None:
        raise HTTPException(404, detail="this service keeps no read model")
    feeds = {stream: kit.settings.feed_url(stream) for stream in kit.pipeline.consumer.handlers}
    replayed = await rebuild(kit.pipeline, kit.replay_pipeline, kit.read_models, feeds)
    return {"replayed": replayed}


def _key_of(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["data"]["user_id"])
    except (ValueError, KeyError, TypeError):
        return ""
