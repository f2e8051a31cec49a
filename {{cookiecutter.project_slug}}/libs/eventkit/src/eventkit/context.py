"""What the current request or event is about, for logs and for the events it causes."""

from __future__ import annotations

from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
event_id: ContextVar[str | None] = ContextVar("event_id", default=None)
event_type: ContextVar[str | None] = ContextVar("event_type", default=None)


def forget_event() -> None:
    """The event a consumer was handling is done with: a message after it (one that cannot
    even be decoded) must not be logged as that event."""
    event_id.set(None)
    event_type.set(None)
    correlation_id.set(None)


def log_fields() -> dict[str, str]:
    fields = {
        "correlation_id": correlation_id.get(),
        "event_id": event_id.get(),
        "event_type": event_type.get(),
    }
    return {key: value for key, value in fields.items() if value}
