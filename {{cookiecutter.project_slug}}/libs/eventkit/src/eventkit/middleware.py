"""HTTP middleware every service gets: a correlation id per request, and request metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from opentelemetry.trace import SpanKind

from eventkit import context, tracing
from eventkit.metrics import HTTP_REQUESTS, HTTP_SECONDS

HEADER = "X-Correlation-ID"


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Events caused by this request carry its correlation id (see new_event).
        token = context.correlation_id.set(request.headers.get(HEADER) or str(uuid.uuid4()))
        started = time.perf_counter()
        parent = request.headers if "traceparent" in request.headers else None
        with tracing.span(request.method, SpanKind.SERVER, parent) as span:
            try:
                response = await call_next(request)
            finally:
                route = request.scope.get("route")
                path = getattr(route, "path", "unmatched")
                span.update_name(f"{request.method} {path}")
                elapsed = time.perf_counter() - started
                HTTP_SECONDS.labels(method=request.method, route=path).observe(elapsed)
            span.set_attribute("http.response.status_code", response.status_code)
        HTTP_REQUESTS.labels(method=request.method, route=path, status=response.status_code).inc()
        response.headers[HEADER] = context.correlation_id.get() or ""
        context.correlation_id.reset(token)
        return response
