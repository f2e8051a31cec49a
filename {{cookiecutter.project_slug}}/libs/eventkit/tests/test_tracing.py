"""One trace from an HTTP request, through the outbox and the transport, to a consumer."""

import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from fastapi import APIRouter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import (
    Envelope,
    Kit,
    ServiceSettings,
    Subscriptions,
    add_to_outbox,
    create_service,
    tracing,
)
from eventkit.testing import async_wait_until, running
from eventkit.transports.memory import MemoryTransport
from sample_domain import THINGS, things_roster, vanished


class Settings(ServiceSettings):
    SERVICE_NAME: str = "source"
    PORT: int = 9998


@pytest.fixture
def transport() -> MemoryTransport:
    """The in-process transport: both services of the trace share it, with no broker."""
    return MemoryTransport()


async def test_a_request_and_its_consumers_share_one_trace(
    database_url: str, tmp_path: object, transport: MemoryTransport
) -> None:
    exporter = InMemorySpanExporter()
    tracing.setup("source").add_span_processor(SimpleSpanProcessor(exporter))

    router = APIRouter()

    @router.post("/produce")
    async def produce(kit: Kit) -> dict[str, str]:
        event = vanished("t1")
        async with kit.transaction() as session:
            add_to_outbox(session, THINGS, event)
        return {"id": str(event.id)}

    applied: list[Mapping[str, str]] = []
    subscriptions = Subscriptions()

    @subscriptions.on_message(THINGS)
    async def on_event(event: Envelope, session: AsyncSession) -> None:
        applied.append(tracing.inject())

    roster = things_roster("tracing-consumer")
    producer_app = create_service(
        Settings(DATABASE_URL=database_url),
        roster,
        title="p",
        routers=[router],
        transport=transport,
    )
    consumer_db = database_url.replace("test.db", "consumer.db")
    consumer_app = create_service(
        Settings(DATABASE_URL=consumer_db, SERVICE_NAME="tracing-consumer"),
        roster,
        title="c",
        subscriptions=subscriptions,
        transport=transport,
    )
    async with running(consumer_app), running(producer_app) as client:
        exporter.clear()
        assert (await client.post("/produce")).status_code == 200

        async def consumed() -> bool:
            return bool(applied)

        await async_wait_until(consumed, what="the consumer to apply the event")

    finished = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}

    def ancestors(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    [process] = [s for s in finished if s.name == f"process {THINGS}"]
    assert len({s.context.trace_id for s in finished}) == 1
    # consumer <- publish (across the transport) <- ... <- the HTTP request
    chain = ancestors(process)
    assert chain[0] == f"publish {THINGS}"
    assert chain[-1] == "POST /produce"
    # One span per request, eventkit's: FastAPI's own telemetry would add a second set.
    assert [s.name for s in finished if s.kind is SpanKind.SERVER] == ["POST /produce"]
    assert not [s.name for s in finished if s.name.startswith("fastapi.")]
    assert process.attributes is not None and process.attributes["service"] == "tracing-consumer"


def test_a_root_keeps_its_ratio_of_traces_and_a_child_follows_its_parent() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler(0.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root") as root:
        # Not kept, but its ids exist: logs and message headers still carry them.
        assert not root.is_recording() and root.get_span_context().is_valid
        flags = int(tracing.inject()["traceparent"].rsplit("-", 1)[1], 16)
        assert flags & 1 == 0, "the sampled flag tells the consumers to drop it too"
    sampled_upstream = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}
    with tracer.start_as_current_span("child", context=tracing.extract(sampled_upstream)):
        pass
    assert [span.name for span in exporter.get_finished_spans()] == ["child"]

    keep_all = TracerProvider(sampler=tracing.sampler(1.0)).get_tracer("test")
    dropped_upstream = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-00"}
    with keep_all.start_as_current_span("child", context=tracing.extract(dropped_upstream)) as s:
        assert not s.is_recording()


def test_spans_go_to_a_file_only_when_asked_and_in_batches_off_the_caller(
    tmp_path: Path,
) -> None:
    path = tmp_path / "traces" / "svc.jsonl"
    provider = tracing.provider("svc", str(path))
    with provider.get_tracer("test").start_as_current_span("handle") as span:
        pass
    assert not path.exists(), "the span was written while its caller waited"
    assert provider.force_flush()
    [line] = path.read_text().splitlines()
    assert json.loads(line)["span_id"] == f"{span.get_span_context().span_id:016x}"
    provider.shutdown()

    quiet = tracing.provider("svc")
    with quiet.get_tracer("test").start_as_current_span("handle"):
        pass
    assert quiet.force_flush()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["svc.jsonl"]


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP endpoint that records each POST: (its base URL, [(path, body)])."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_the_otlp_endpoint_of_the_settings(
    collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    endpoint, received = collector
    provider = tracing.provider("billing", otlp_endpoint=endpoint)
    with provider.get_tracer("test").start_as_current_span("process user.events"):
        pass
    assert provider.force_flush()
    provider.shutdown()
    [(path, body)] = received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "billing"
    assert [s.name for scope in resource.scope_spans for s in scope.spans] == [
        "process user.events"
    ]
