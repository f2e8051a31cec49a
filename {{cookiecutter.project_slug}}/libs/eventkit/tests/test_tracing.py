"""One trace from an HTTP request, through the outbox and the transport, to a consumer."""

from collections.abc import Mapping

from fastapi import APIRouter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
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
    assert process.attributes is not None and process.attributes["service"] == "tracing-consumer"
