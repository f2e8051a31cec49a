"""HTTP middleware every service gets: a correlation id per request, a span, metrics, and
a limit on the size of a request body.

Plain ASGI middlewares (not Starlette's BaseHTTPMiddleware, which costs a task and a
stream per request). Label values are bounded: a method outside HTTP's own is counted as
`other`, a path that matches no route as `unmatched`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventkit import context, tracing
from eventkit.metrics import HTTP_REQUESTS, HTTP_SECONDS
from eventkit.settings import default

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


class LimitRequestBody:
    """A body above `max_bytes` gets 413 before it is all read: by its Content-Length, or,
    sent without one, once that much has arrived."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = HTTPException(413, detail=f"request body above {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _answer(too_large, scope, receive, send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large  # FastAPI answers it where the route reads the body
            return message

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, send_noting_start)
        except HTTPException as exc:
            if exc is not too_large or started:
                raise
            await _answer(too_large, scope, receive, send)


async def _answer(error: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": error.detail}, status_code=error.status_code)
    await response(scope, receive, send)


def install(app: FastAPI, max_body_bytes: int = default("MAX_REQUEST_BODY_BYTES")) -> None:
    app.add_middleware(LimitRequestBody, max_bytes=max_body_bytes)
    app.add_middleware(ObserveRequests)  # added last, so outermost: it sees the 413s too
