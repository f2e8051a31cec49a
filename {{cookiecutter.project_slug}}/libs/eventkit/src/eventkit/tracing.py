"""OpenTelemetry tracing: one trace from an HTTP request through the broker to every consumer.

The request's span context is stored with each outbox row, the relay's publish span
continues it and travels in the message headers (W3C traceparent), and each consumer's
span continues that. Spans go to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, and to a
JSON-lines file when TRACES_FILE is (the local stack writes var/traces/<service>.jsonl).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
tracer = trace.get_tracer("eventkit")


def setup(service: str, traces_file: str | None = None) -> TracerProvider:
    """Install this process's tracer provider once; later calls return the same one."""
    global _provider
    if _provider is not None:
        return _provider
    _provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if traces_file:
        _provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(Path(traces_file))))
    trace.set_tracer_provider(_provider)
    return _provider


def inject(context: Context | None = None) -> dict[str, str]:
    """The current (or given) span context as message headers."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, str] | None) -> Context:
    return _propagator.extract(dict(headers or {}))


@contextmanager
def span(
    name: str,
    kind: SpanKind,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[Span]:
    """A span continuing the trace in `parent` headers (or the current one)."""
    context = extract(parent) if parent is not None else None
    with tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


class JsonLinesExporter(SpanExporter):
    """Writes each finished span as one JSON object a line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for item in spans:
            context, parent = item.get_span_context(), item.parent
            assert context is not None
            lines.append(
                json.dumps(
                    {
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "name": item.name,
                        "kind": item.kind.name,
                        "service": item.resource.attributes.get("service.name"),
                        "start": item.start_time,
                        "end": item.end_time,
                        "attributes": dict(item.attributes or {}),
                    },
                    default=str,
                )
            )
        with self._lock, self.path.open("a") as out:
            out.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None
