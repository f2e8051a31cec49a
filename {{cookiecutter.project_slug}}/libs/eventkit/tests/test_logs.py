import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from eventkit import context
from eventkit.logs import JsonFormatter


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("svc", logging.INFO, __file__, 1, message, None, None)


def test_a_log_line_is_json_with_the_service_and_the_event_being_handled() -> None:
    formatter = JsonFormatter("billing")
    tokens = [
        context.correlation_id.set("corr-1"),
        context.event_id.set("evt-1"),
        context.event_type.set("UserCreated"),
    ]
    try:
        line = json.loads(formatter.format(record("applied")))
    finally:
        for var, token in zip(
            (context.correlation_id, context.event_id, context.event_type), tokens, strict=True
        ):
            var.reset(token)
    assert line["service"] == "billing"
    assert line["message"] == "applied"
    assert (line["correlation_id"], line["event_id"], line["event_type"]) == (
        "corr-1",
        "evt-1",
        "UserCreated",
    )
    assert "event_id" not in json.loads(formatter.format(record("idle")))


def test_every_log_line_names_the_trace_and_span_it_was_written_in() -> None:
    formatter = JsonFormatter("billing")
    outside = json.loads(formatter.format(record("idle")))
    assert (outside["trace_id"], outside["span_id"]) == ("0" * 32, "0" * 16)

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("handle") as span:
        inside = json.loads(formatter.format(record("applied")))
    ids = span.get_span_context()
    assert inside["trace_id"] == f"{ids.trace_id:032x}" != "0" * 32
    assert inside["span_id"] == f"{ids.span_id:016x}" != "0" * 16
