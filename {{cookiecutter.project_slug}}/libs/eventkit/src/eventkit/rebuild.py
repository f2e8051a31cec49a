"""Rebuild a read model: empty it and its inbox, then replay the publishers' event feeds.

Live consumption pauses meanwhile on every replica (eventkit.pause); a rebuild that fails
midway keeps it paused, and the read routes answering 503 with the reason, until a
rebuild succeeds, so a partial read model is never served or built upon. Each feed is read a
page at a time in its publisher's order, which is each aggregate's sequence order, and
the feeds are merged by timestamp, the order the events were produced in, so the rebuilt
model equals the live one. Only one page per feed is held in memory.
"""

from __future__ import annotations

import contextlib
import heapq
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import delete

from eventkit import clock, pause
from eventkit.consumer import Consumer
from eventkit.envelope import Envelope
from eventkit.feed import PENDING_KEY_HEADER, PENDING_POSITION_HEADER
from eventkit.inbox import AggregatePosition, ProcessedEvent

PAGE_SIZE = 500


class RebuildRunning(Exception):
    """Another replica is rebuilding this service's read model."""


class RebuildFailed(Exception):
    """The rebuild stopped midway; its message is the reason the read routes give."""


# How often, and how many times in all per feed, a rebuild asks again for an event the
# publisher has not marked sent: one the broker has just taken is marked within moments.
UNSENT_POLL_SECONDS = 0.1
UNSENT_POLLS = 100


async def feed_pages(
    client: httpx.AsyncClient, url: str, page_size: int = PAGE_SIZE
) -> AsyncIterator[list[dict[str, Any]]]:
    """A feed's events, a page at a time, in the publisher's order.

    An event the publisher has not marked sent ends a page (feed.py). The broker may have
    it already (the mark follows the broker's answer; a consumer may even have applied it,
    which the rebuild has just undone): the reader asks again until it is marked. One
    still unsent after UNSENT_POLLS asks (in all) will be published again: it and its key's
    later events are left out, to come through the broker in order (seeds 22000763,
    32000018 and 31000026 of the simulation).
    """
    after = 0
    unsent_keys: set[str] = set()
    polls = UNSENT_POLLS
    while True:
        response = await client.get(url, params={"after": after, "limit": page_size})
        response.raise_for_status()
        items = response.json()
        page = [item for item in items if _key(item) not in unsent_keys]
        if page:
            yield page
        if items:
            after = items[-1]["position"]
        unsent = response.headers.get(PENDING_POSITION_HEADER)
        if unsent is None:
            if not items:
                return
        elif polls > 0:
            polls -= 1
            await clock.sleep(UNSENT_POLL_SECONDS)
        else:
            if key := response.headers.get(PENDING_KEY_HEADER):
                unsent_keys.add(key)
            after = int(unsent)


def _key(item: dict[str, Any]) -> str:
    """The outbox key of a feed item: its aggregate's id ('' for none, which keeps no order)."""
    return str(item["event"].get("aggregate_id") or "")


async def merged(
    client: httpx.AsyncClient, feed_urls: dict[str, str]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(stream, event) of every feed, merged by timestamp, one page per feed in memory."""

    async def events(stream: str, url: str) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        async for page in feed_pages(client, url):
            for item in page:
                event = item["event"]
                yield Envelope.model_validate(event).timestamp.isoformat(), stream, event

    iterators = {stream: events(stream, url).__aiter__() for stream, url in feed_urls.items()}
    heads: list[tuple[str, str, dict[str, Any]]] = []
    for iterator in iterators.values():
        if (head := await anext(iterator, None)) is not None:
            heapq.heappush(heads, head)
    while heads:
        _, stream, event = heapq.heappop(heads)
        yield stream, event
        if (head := await anext(iterators[stream], None)) is not None:
            heapq.heappush(heads, head)


async def rebuild(
    live: Consumer,
    replay: Consumer,
    read_models: list[Any],
    feed_urls: dict[str, str],
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, int]:
    """Returns how many events were replayed per stream.

    RebuildRunning if another rebuild holds the pause; LeaseLost if another took it over
    midway (this one stops and leaves that one's pause alone); RebuildFailed, with the
    reason, if it fails midway: the pause then stays on, and the read routes answer 503,
    until a rebuild succeeds (pause.py).

    `transport`: how the feeds are reached; None: the network (the pipeline simulation
    gives an in-process one).
    """
    db = replay.db
    holder = pause.new_holder()
    counts = dict.fromkeys(feed_urls, 0)

    async def apply(stream: str, batch: list[tuple[bytes, dict[str, str]]]) -> None:
        await pause.renew(db, holder)  # before it writes: a lost lease writes nothing
        await replay.handle_batch(stream, batch)

    async with live.gate.closed():  # this process: no batch in flight, none starts
        if not await pause.take(db, holder):  # the other replicas: the same
            # the reason says until when: a holder whose process died keeps it that long
            raise RebuildRunning(await pause.unavailable(db) or "another rebuild holds it")
        try:
            async with db.transaction() as session:
                for model in read_models:
                    await session.execute(delete(model))
                await session.execute(delete(ProcessedEvent))
                await session.execute(delete(AggregatePosition))
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            client = httpx.AsyncClient(timeout=30, headers=headers, transport=transport)
            async with client:
                batch: list[tuple[bytes, dict[str, str]]] = []
                batch_stream = ""
                async for stream, event in merged(client, feed_urls):
                    if batch and (stream != batch_stream or len(batch) >= PAGE_SIZE):
                        await apply(batch_stream, batch)
                        batch = []
                    batch_stream = stream
                    batch.append((json.dumps(event).encode(), {}))
                    counts[stream] += 1
                if batch:
                    await apply(batch_stream, batch)
        except pause.LeaseLost:
            raise
        except Exception as exc:  # (cancelled: the reason `take` recorded stays)
            reason = f"the rebuild by {holder} failed: {_reason(exc)}"
            await pause.release(db, holder, failure=reason)
            raise RebuildFailed(reason) from exc
        await pause.release(db, holder)
    return counts


def _reason(exc: Exception) -> str:
    """What an operator needs: the error and, for a feed, the address that failed."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.request.url} answered {exc.response.status_code}"
    if isinstance(exc, httpx.RequestError):
        with contextlib.suppress(RuntimeError):  # an error made without its request
            return f"{exc.request.url} did not answer ({exc!r})"
    return repr(exc)[:500]
