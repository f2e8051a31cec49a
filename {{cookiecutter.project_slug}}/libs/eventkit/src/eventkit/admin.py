"""Admin calls of a consuming service: its dead letters, their replay, and rebuilds.

They need `Authorization: Bearer <ADMIN_TOKEN>` when ADMIN_TOKEN is set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import delete, select

from eventkit.dead_letters import DeadLetter
from eventkit.deps import Kit, require_admin
from eventkit.inputs import DEFAULT_LIMIT, Limit, PositionAfter, text
from eventkit.rebuild import RebuildRunning, rebuild

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


class DeadLetterOut(BaseModel):
    position: int  # give it as `after` for the next page
    event_id: str | None
    type: str | None
    error: str
    attempts: int
    failed_at: datetime
    topic: str
    payload: str


class ReplayRequest(BaseModel):
    event_ids: list[Annotated[str, text(max_length=100)]] | None = Field(None, max_length=1000)


@router.get("/dlq", response_model=list[DeadLetterOut])
async def list_dead_letters(
    kit: Kit, after: PositionAfter = 0, limit: Limit = DEFAULT_LIMIT
) -> list[DeadLetterOut]:
    query = select(DeadLetter).where(DeadLetter.id > after).order_by(DeadLetter.id).limit(limit)
    async with kit.db.sessions() as session:
        rows = await session.scalars(query)
        return [
            DeadLetterOut(
                position=row.id,
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
            row.stream, row.payload, key=row.key, event_type=row.event_type or ""
        )
        async with kit.db.transaction() as session:
            await session.execute(delete(DeadLetter).where(DeadLetter.id == row.id))
    return {"replayed": len(rows)}


@router.post("/admin/rebuild")
async def rebuild_read_model(kit: Kit) -> dict[str, Any]:
    """Empty this service's read model and inbox, and replay every event it subscribes to."""
    if kit.consumer is None or kit.replay_consumer is None:
        raise HTTPException(404, detail="this service keeps no read model")
    if kit.rebuilding.locked():
        raise HTTPException(409, detail="a rebuild is already running; try again when it ends")
    async with kit.rebuilding:
        try:
            replayed = await rebuild(
                kit.consumer,
                kit.replay_consumer,
                kit.read_models,
                kit.feed_urls(),
                kit.settings.ADMIN_TOKEN,
            )
        except RebuildRunning as exc:
            raise HTTPException(409, detail=f"{exc}; try again when it ends") from exc
    return {"replayed": replayed}
