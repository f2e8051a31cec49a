"""Rebuild a read model: empty it and its inbox, then replay the publishers' event feeds.

Live handling pauses meanwhile. Events of all streams are applied in timestamp order,
the order they were produced in, so the rebuilt model equals the live one.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import delete

from eventkit.consumer import Consumer
from eventkit.envelope import Envelope
from eventkit.inbox import AggregatePosition, ProcessedEvent


async def fetch_feed(
    url: str, token: str | None = None, page_size: int = 500
) -> list[dict[str, Any]]:
    """Every event of a feed, a page at a time; `token` is this service's admin token."""
    items: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        while True:
            after = items[-1]["position"] if items else 0
            response = await client.get(url, params={"after": after, "limit": page_size})
            response.raise_for_status()
            page = response.json()
            if not page:
                return items
            items.extend(page)


async def rebuild(
    live: Consumer,
    replay: Consumer,
    read_models: list[Any],
    feed_urls: dict[str, str],
    token: str | None = None,
) -> dict[str, int]:
    """Returns how many events were replayed per stream."""
    async with live.gate.closed():
        feeds = {stream: await fetch_feed(url, token) for stream, url in feed_urls.items()}
        async with replay.db.transaction() as session:
            for model in read_models:
                await session.execute(delete(model))
            await session.execute(delete(ProcessedEvent))
            await session.execute(delete(AggregatePosition))
        merged = sorted(
            (
                (Envelope.model_validate(item["event"]).timestamp, stream, item)
                for stream, items in feeds.items()
                for item in items
            ),
            key=lambda entry: entry[0],
        )
        for _, stream, item in merged:
            await replay.handle(stream, json.dumps(item["event"]).encode())
    return {stream: len(items) for stream, items in feeds.items()}
