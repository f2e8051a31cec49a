"""One trace from an HTTP request, through the outbox and the transport, to a consumer."""

from collections.abc import Mapping

from fastapi import APIRouter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import (
    Consumer,
    Envelope,
    Kit,
    ServiceSettings,
    add_to_outbox,
    create_service,
    new_event,
    tracing,
)
from eventkit.bus import InProcessTransport
from eventkit.testing import async_wait_until, running


class Settings(ServiceSettings):
    SERVICE_NAME: str = "tracing-probe"
    PORT: int = 9998


async def test_a_request_and_its_consumers_share_one_trace(
    database_url: str, tmp_path: object, transport: InProcessTransport
) -> None:
    exporter = InMemorySpanExporter()
    tracing.setup("tracing-probe").add_span_processor(SimpleSpanProcessor(exporter))

    router = APIRouter()

    @router.post("/produce")
    async def produce(kit: Kit) -> dict[str, str]:
        event = new_event("UserDeactivated", {"user_id": "u1"}, source="tracing-probe")
        async with kit.transaction() as session:
            add_to_outbox(session, event, key="u1")
        return {"id": str(event.id)}

    applied: list[Mapping[str, str]] = []
    consumer = Consumer("tracing-consumer")

    @consumer.on_message("user.events")
    async def on_event(event: Envelope, session: AsyncSession) -> None:
        applied.append(tracing.inject())

    producer_app = create_service(
        Settings(DATABASE_URL=database_url), title="p", routers=[router], transport=transport
    )
    consumer_db = database_url.replace("test.db", "consumer.db")
    consumer_app = create_service(
        Settings(DATABASE_URL=consumer_db), title="c", consumer=consumer, transport=transport
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

    [process] = [s for s in finished if s.name == "process user.events"]
    assert len({s.context.trace_id for s in finished}) == 1
    # consumer <- publish (across the transport) <- ... <- the HTTP request
    chain = ancestors(process)
    assert chain[0] == "publish user.events"
    assert chain[-1] == "POST /produce"
    assert process.attributes is not None and process.attributes["service"] == "tracing-consumer"
