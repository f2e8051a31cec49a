"""OpenTelemetry tracing: one trace from an HTTP request through the broker to every consumer.

The request's span context is stored with each outbox row, the relay's publish span
continues it and travels in the message headers (W3C traceparent), and each consumer's
span continues that.

Cheap when nobody looks: spans leave the process only when asked, to OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set and to a JSON-lines file when TRACES_FILE is, both through
a batch processor (a background thread exports; the request and the handler never wait on
it). A root trace is kept with probability TRACE_SAMPLE_RATIO and every span follows its
parent's decision, so a trace is whole or absent, across services too. OTEL_TRACES_SAMPLER,
when set, takes precedence (the OpenTelemetry SDK reads it). Span and trace ids exist even for
a trace that is not kept: log lines and message headers carry them.
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
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
tracer = trace.get_tracer("eventkit")


def setup(
    service: str,
    traces_file: str | None = None,
    *,
    otlp_endpoint: str | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """Install this process's tracer provider (`provider`) once; later calls return it."""
    global _provider
    if _provider is None:
        _provider = provider(
            service, traces_file, otlp_endpoint=otlp_endpoint, sample_ratio=sample_ratio
        )
        trace.set_tracer_provider(_provider)
    return _provider


def provider(
    service: str,
    traces_file: str | None = None,
    *,
    otlp_endpoint: str | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """A tracer provider that exports only where asked, each exporter behind a batch processor.

    `otlp_endpoint` is the collector's base URL (OTLP over HTTP, e.g. http://jaeger:4318);
    spans go to `<it>/v1/traces`.
    """
    made = TracerProvider(
        resource=Resource.create({"service.name": service}), sampler=sampler(sample_ratio)
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{otlp_endpoint.rstrip('/')}/v1/traces")
        made.add_span_processor(BatchSpanProcessor(exporter))
    if traces_file:
        made.add_span_processor(BatchSpanProcessor(JsonLinesExporter(Path(traces_file))))
    return made


def sampler(ratio: float) -> Sampler | None:
    """Parent-based: a span follows its parent's decision (the traceparent's sampled flag), and
    a root keeps `ratio` of traces, chosen by trace id. None when OTEL_TRACES_SAMPLER is set:
    the SDK then builds the sampler it names."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    return ParentBased(TraceIdRatioBased(ratio))


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


def record(
    name: str,
    kind: SpanKind,
    parent: Mapping[str, str],
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, str] | None = None,
) -> None:
    """A finished span in the trace of `parent` headers, timed by the caller.

    A batch of events belongs to as many traces as it has events: each gets its span,
    timed as the batch that applied it.
    """
    started = tracer.start_span(
        name, context=extract(parent), kind=kind, attributes=attributes, start_time=start_ns
    )
    started.end(end_time=end_ns)


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
