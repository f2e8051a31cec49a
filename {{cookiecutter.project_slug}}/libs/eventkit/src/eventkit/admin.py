"""Admin calls of a consuming service: its dead letters, their replay, and rebuilds.

They need `Authorization: Bearer <ADMIN_TOKEN>` when ADMIN_TOKEN is set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select

from eventkit.consumer import ATTEMPTS_HEADER, EVENT_TYPE_HEADER
from eventkit.dead_letters import DeadLetter
from eventkit.deps import Kit, require_admin
from eventkit.inputs import DEFAULT_LIMIT, MAX_LIMIT, MAX_POSITION, Limit, PositionAfter, text
from eventkit.pause import LeaseLost
from eventkit.rebuild import RebuildFailed, RebuildRunning, rebuild

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])
# Dead letters a replay reads from the database at once.
REPLAY_PAGE = 100


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
    kit: Kit,
    body: Annotated[ReplayRequest | None, Body()] = None,
    after: PositionAfter = 0,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_LIMIT, description="At most this many (a page); unset: all."),
    ] = None,
    through: Annotated[
        int | None,
        Query(ge=0, le=MAX_POSITION, description="The last position this replay covers."),
    ] = None,
) -> dict[str, int | None]:
    """Hand dead letters (all, or those named) back to this service, oldest first, and drop
    them from the list, read a page at a time: every one, or up to `limit` after position
    `after`.

    They go to this service's own handlers, through its retry delay (the broker holds them
    meanwhile), with their attempts counted from 0 again; the stream's other subscribers do
    not get them again. `through` bounds the replay (by default, the last dead letter when
    it begins), so one that fails again and comes back is not replayed twice in one go.
    The answer is the contract's `{"replayed": N}`; with `limit` it also has `next`, which
    continues the replay (give it as `after`, with the same `through`), null once nothing
    is left.
    """
    tiers = kit.transport.config.retry_tiers
    if not tiers:
        raise HTTPException(
            409, detail="MAX_RETRIES is 0: there is no retry delay to hand dead letters back by"
        )
    if through is None:
        async with kit.db.sessions() as session:
            through = await session.scalar(select(func.max(DeadLetter.id))) or 0
    query = select(DeadLetter).where(
        DeadLetter.id <= through, DeadLetter.stream.in_(kit.spec.subscribes)
    )
    if body is not None and body.event_ids is not None:
        query = query.where(DeadLetter.event_id.in_(body.event_ids))

    def answer(next_after: int | None) -> dict[str, int | None]:
        if limit is None:
            return {"replayed": replayed}
        return {"replayed": replayed, "next": next_after, "through": through}

    replayed, last = 0, after
    while limit is None or replayed < limit:
        async with kit.db.sessions() as session:
            page = REPLAY_PAGE if limit is None else min(REPLAY_PAGE, limit - replayed)
            rows = (
                await session.scalars(
                    query.where(DeadLetter.id > last).order_by(DeadLetter.id).limit(page)
                )
            ).all()
        for row in rows:
            headers = {ATTEMPTS_HEADER: "0"}
            if row.event_type:
                headers[EVENT_TYPE_HEADER] = row.event_type
            await kit.transport.publish_retry(
                row.stream, row.payload, headers, key=row.key, delay=tiers[0]
            )
            async with kit.db.transaction() as session:
                await session.execute(delete(DeadLetter).where(DeadLetter.id == row.id))
            replayed, last = replayed + 1, row.id
        if len(rows) < page:
            return answer(None)
    async with kit.db.sessions() as session:
        more = await session.scalar(query.where(DeadLetter.id > last).limit(1))
    return answer(last if more else None)


@router.post("/admin/rebuild")
async def rebuild_read_model(kit: Kit) -> dict[str, Any]:
    """Empty this service's read model and inbox, and replay every event it subscribes to.

    409 while another rebuild runs (or took over from this one); 503 with the reason if it
    fails midway, after which consumption stays paused and the read routes answer 503
    until a rebuild succeeds.
    """
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
                transport=kit.feed_transport,
            )
        except RebuildRunning as exc:
            raise HTTPException(409, detail=f"{exc}; try again when it ends") from exc
        except LeaseLost as exc:
            raise HTTPException(409, detail=f"{exc}; that rebuild goes on") from exc
        except RebuildFailed as exc:
            detail = f"{exc}; consumption stays paused until a rebuild succeeds"
            raise HTTPException(503, detail=detail) from exc
    return {"replayed": replayed}


# The inbox listing (below) is added apart from the routes above, with what it needs.
from datetime import UTC  # noqa: E402

from eventkit.inbox import ProcessedEvent  # noqa: E402
from eventkit.inputs import IdAfter, page_after  # noqa: E402


class InboxRecordOut(BaseModel):
    event_id: str  # give it as `after`, with the same `since`, for the next page
    event_type: str
    stream: str
    processed_at: datetime


@router.get("/admin/inbox", response_model=list[InboxRecordOut])
async def list_inbox(
    kit: Kit,
    since: Annotated[
        datetime | None,
        Query(
            description="Only events processed at or after this time (ISO 8601; UTC "
            "when it names no zone)."
        ),
    ] = None,
    after: IdAfter = None,
    limit: Limit = DEFAULT_LIMIT,
) -> list[InboxRecordOut]:
    """The events this service has processed (its inbox) in the order it processed them,
    a page at a time: each event's id, type, stream, and when its transaction wrote it.
    The benchmark reads the fan-out lag from them after a step, instead of asking the
    read models while the step runs."""
    query = select(ProcessedEvent)
    if since is not None:
        try:
            since = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
        except (OverflowError, ValueError) as exc:  # a zone that takes it out of range
            raise HTTPException(422, detail=f"since: out of range ({exc})") from exc
        query = query.where(ProcessedEvent.processed_at >= since)
    order = (ProcessedEvent.processed_at, ProcessedEvent.event_id)
    async with kit.db.sessions() as session:
        rows = await page_after(session, query, order, after, limit)
    return [InboxRecordOut.model_validate(row, from_attributes=True) for row in rows]
