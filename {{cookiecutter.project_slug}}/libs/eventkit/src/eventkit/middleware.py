"""HTTP middleware every service gets: a correlation id per request, a span, and metrics.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which costs a task and a
stream per request). Label values are bounded: a method outside HTTP's own is counted as
`other`, a path that matches no route as `unmatched`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventkit import context, tracing
from eventkit.metrics import HTTP_REQUESTS, HTTP_SECONDS

HEADER = "X-Correlation-ID"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# A correlation id taken from a caller: short and printable, else a new one is made.
CORRELATION_ID = re.compile(r"[\w.:/+=@-]{1,128}")
TRACE_HEADERS = {"traceparent", "tracestate"}


class ObserveRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get(HEADER.lower(), "")
        correlation_id = given if CORRELATION_ID.fullmatch(given) else str(uuid.uuid4())
        # Events caused by this request carry its correlation id (see new_event).
        token = context.correlation_id.set(correlation_id)
        method = scope["method"] if scope["method"] in METHODS else "other"
        parent = {k: v for k, v in headers.items() if k in TRACE_HEADERS} or None
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (HEADER.encode(), correlation_id.encode()),
                ]
            await send(message)

        with tracing.span(method, SpanKind.SERVER, parent) as span:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route: Any = scope.get("route")
                path = getattr(route, "path", "unmatched")
                span.update_name(f"{method} {path}")
                span.set_attribute("http.response.status_code", status)
                HTTP_SECONDS.labels(method=method, route=path).observe(
                    time.perf_counter() - started
                )
                HTTP_REQUESTS.labels(method=method, route=path, status=status).inc()
                context.correlation_id.reset(token)


def install(app: FastAPI) -> None:
    app.add_middleware(ObserveRequests)
