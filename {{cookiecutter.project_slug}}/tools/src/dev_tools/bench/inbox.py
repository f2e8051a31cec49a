"""The fan-out lag from what the services record (`--lag-from inbox`, the default).

Nothing is asked while a step runs. After it (once every reader has drained), the
producer's feed (`GET /events`) gives each of the step's UserCreated with its envelope
`timestamp`, when the user service made it, in the sign-up's transaction; each reader's
inbox (`GET /admin/inbox`) gives when it processed each event (`processed_at`, written in
the same transaction as its read model). A sign-up's lag in one read model is the one
minus the other; its fan-out lag, the largest of those. Both times are the services'
clocks, on one machine for the local stack.

Both are admin calls: the bench sends ADMIN_TOKEN when it is set, as the admin tool does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from dev_tools.bench.report import summary_ms
from dev_tools.bench.stack import CREATED, PRODUCER, READERS, STREAM, get, url
from eventkit.feed import PENDING_POSITION_HEADER
from eventkit.inputs import MAX_LIMIT, MAX_POSITION
from eventkit.settings import admin_token

PAGE = MAX_LIMIT  # items a feed or inbox call returns at most
SLACK = timedelta(seconds=5)  # inbox rows from this long before a step began are read too


def admin_headers() -> dict[str, str]:
    token = admin_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _feed_page(
    http: httpx.AsyncClient, after: int, limit: int, headers: Mapping[str, str]
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the producer's feed after `after`, and whether an unsent event ended it."""
    response = await get(
        http,
        f"{url(PRODUCER)}/events",
        params={"after": after, "limit": limit},
        headers=headers,
    )
    response.raise_for_status()
    return response.json(), PENDING_POSITION_HEADER in response.headers


async def feed_end(http: httpx.AsyncClient, headers: Mapping[str, str]) -> int:
    """The position of the producer's last event (0 if none): where a step's events begin.

    Found by asking whether anything follows a position, doubling it then halving the gap,
    a few dozen calls of one item each, rather than reading every earlier event."""

    async def beyond(position: int) -> bool:
        page, pending = await _feed_page(http, position, 1, headers)
        return bool(page) or pending

    if not await beyond(0):
        return 0
    low, high = 0, 1  # something follows `low`; at `high`, perhaps not
    while high < MAX_POSITION and await beyond(high):
        low, high = high, min(MAX_POSITION, high * 2)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if await beyond(middle) else (low, middle)
    return high


async def produced_since(
    http: httpx.AsyncClient, after: int, headers: Mapping[str, str]
) -> tuple[dict[str, datetime], int]:
    """The UserCreated on the user stream after feed position `after`: event id -> the
    envelope's timestamp; and the position of the last event read (the next step's start)."""
    events: dict[str, datetime] = {}
    while True:
        page, pending = await _feed_page(http, after, PAGE, headers)
        for item in page:
            event = item["event"]
            if item["stream"] == STREAM and event["type"] == CREATED:
                events[event["id"]] = datetime.fromisoformat(event["timestamp"])
        if page:
            after = page[-1]["position"]
        if pending or len(page) < PAGE:
            return events, after


async def processed_since(
    http: httpx.AsyncClient,
    service: str,
    since: datetime,
    wanted: set[str],
    headers: Mapping[str, str],
) -> dict[str, datetime]:
    """Event id -> processed_at of each of `wanted` that `service`'s inbox holds, reading
    its inbox from `since` (less SLACK) on, a page at a time."""
    params: dict[str, Any] = {"since": (since - SLACK).isoformat(), "limit": PAGE}
    found: dict[str, datetime] = {}
    while True:
        response = await get(http, f"{url(service)}/admin/inbox", params=params, headers=headers)
        response.raise_for_status()
        page = response.json()
        for item in page:
            if item["event_id"] in wanted:
                found[item["event_id"]] = datetime.fromisoformat(item["processed_at"])
        if len(page) < PAGE or len(found) == len(wanted):
            return found
        params["after"] = page[-1]["event_id"]


def inbox_lags(
    produced: Mapping[str, datetime], processed: Mapping[str, Mapping[str, datetime]]
) -> dict[str, Any]:
    """The fan-out lag of each produced event (id -> when made) from when each read model
    processed it (read model -> id -> when): the summaries saturation reports.

    An event some read model never processed is counted in `missing` and left out of the
    overall lag; each read model's own lags count every event it did process."""
    by_model: dict[str, list[float]] = {name: [] for name in processed}
    overall: list[float] = []
    missing = 0
    for event_id, made in produced.items():
        lags = {}
        for name, records in processed.items():
            at = records.get(event_id)
            if at is not None:
                lags[name] = (at - made).total_seconds()
                by_model[name].append(lags[name])
        if processed and len(lags) == len(processed):
            overall.append(max(lags.values()))
        else:
            missing += 1
    return {
        "fanout_lag": summary_ms(overall),
        "fanout_lag_by_read_model": {name: summary_ms(lags) for name, lags in by_model.items()},
        "fanout_timeouts": missing,
    }


async def step_lags(
    http: httpx.AsyncClient,
    since: datetime,
    feed_after: int,
    headers: Mapping[str, str],
) -> tuple[dict[str, Any], int]:
    """The lags of the sign-ups the producer made after feed position `feed_after` (in a
    step that began at `since`), from every reader's inbox; and the feed's new end."""
    produced, end = await produced_since(http, feed_after, headers)
    wanted = set(produced)
    processed = {
        name: await processed_since(http, name, since, wanted, headers) for name in READERS
    }
    lags = inbox_lags(produced, processed)
    lags["events_in_feed"] = len(produced)
    return lags, end
