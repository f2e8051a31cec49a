"""One sign-up is one trace: the user service, its publish, and every consumer of the stream.

Spans are read from Jaeger's query API at JAEGER_URL where it is set (docker compose: every
service sends its spans to Jaeger; `make e2e-compose` sets it), else from
var/traces/<service>.jsonl, which the services of `make local-up` write (TRACES_FILE).
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import ROSTER, USER_EVENTS
from eventkit.testing import wait_until

PRODUCER = ROSTER.producer(USER_EVENTS).name
CONSUMERS = {spec.name for spec in ROSTER.subscribers(USER_EVENTS)}
PUBLISH, PROCESS = f"publish {USER_EVENTS}", f"process {USER_EVENTS}"
TRACES = Path(__file__).resolve().parents[2] / "var" / "traces"
JAEGER_URL = os.environ.get("JAEGER_URL")
JAEGER_KINDS = {"server", "client", "producer", "consumer", "internal"}


def spans_in_jaeger(trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans as Jaeger's query API gives them, in the files' shape."""
    response = httpx.get(f"{JAEGER_URL}/api/traces/{trace_id}", timeout=10)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    found = []
    for trace in response.json()["data"] or []:
        services = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
        for span in trace["spans"]:
            tags = {tag["key"]: tag["value"] for tag in span["tags"]}
            parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
            kind = str(tags.get("span.kind", "internal"))
            found.append(
                {
                    "trace_id": span["traceID"],
                    "span_id": span["spanID"],
                    "parent_id": parents[0] if parents else None,
                    "name": span["operationName"],
                    "service": services[span["processID"]],
                    "kind": kind.upper() if kind in JAEGER_KINDS else kind,
                }
            )
    return found


def spans_of(trace_id: str) -> list[dict[str, Any]]:
    if JAEGER_URL:
        return spans_in_jaeger(trace_id)
    found = []
    for path in TRACES.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if trace_id in line:
                span = json.loads(line)
                if span["trace_id"] == trace_id:
                    found.append(span)
    return found


def test_one_sign_up_is_one_trace_across_the_producer_and_every_consumer(
    user: httpx.Client,
) -> None:
    if not JAEGER_URL and not TRACES.is_dir():
        pytest.skip(
            f"no spans at {TRACES} and no JAEGER_URL: this stack was not started by "
            "`make local-up`; set JAEGER_URL to read them from Jaeger"
        )
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    response = user.post(
        "/users",
        json={"name": "Traced", "email": f"traced-{uuid.uuid4().hex[:8]}@example.com"},
        headers={"traceparent": traceparent},
    )
    assert response.status_code == 201

    def consumers_done() -> list[dict[str, Any]] | None:
        # Each process writes its spans in batches, in its own time: wait for all of them.
        spans = spans_of(trace_id)
        consumed = {s["service"] for s in spans if s["name"] == PROCESS}
        names = {s["name"] for s in spans}
        return spans if consumed == CONSUMERS and {PUBLISH, "POST /users"} <= names else None

    spans = wait_until(consumers_done, timeout=30, what=f"spans of trace {trace_id}")
    by_id = {s["span_id"]: s for s in spans}
    [publish] = [s for s in spans if s["name"] == PUBLISH]
    assert publish["service"] == PRODUCER
    assert {s["service"] for s in spans} == {PRODUCER, *CONSUMERS}
    for process in (s for s in spans if s["name"] == PROCESS):
        assert process["kind"] == "CONSUMER"
        assert process["parent_id"] == publish["span_id"], "a consumer span lost its parent"
    # The publish span descends from the HTTP request that wrote the event.
    parent = by_id.get(publish["parent_id"])
    names = []
    while parent is not None:
        names.append(parent["name"])
        parent = by_id.get(parent["parent_id"])
    assert "POST /users" in names
