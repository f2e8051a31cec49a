"""The registry of event types the system knows: their stream, version and data schema.

Producers and consumers share this one list, so a consumer can tell an unknown
or malformed event from one it simply does not care about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eventkit.envelope import Envelope

USER_EVENTS = "user.events"
BILLING_EVENTS = "billing.events"
STREAMS = (USER_EVENTS, BILLING_EVENTS)
# The one service that publishes each stream (and serves its feed).
PRODUCERS = {USER_EVENTS: "user", BILLING_EVENTS: "billing"}


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UserCreated(EventData):
    user_id: str
    name: str
    email: str


class NameChanged(EventData):
    user_id: str
    new_name: str


class EmailChanged(EventData):
    user_id: str
    new_email: str


class UserDeactivated(EventData):
    user_id: str


class InvoiceIssued(EventData):
    invoice_id: str
    user_id: str
    amount: Decimal = Field(gt=0)


@dataclass(frozen=True)
class EventType:
    name: str
    stream: str
    version: int
    schema: type[EventData]


REGISTRY: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("UserCreated", USER_EVENTS, 1, UserCreated),
        EventType("NameChanged", USER_EVENTS, 1, NameChanged),
        EventType("EmailChanged", USER_EVENTS, 1, EmailChanged),
        EventType("UserDeactivated", USER_EVENTS, 1, UserDeactivated),
        EventType("InvoiceIssued", BILLING_EVENTS, 1, InvoiceIssued),
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type, from_version) -> function turning that version's data into the next version's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that lifts `event_type` data from `from_version` to the next."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def describe(stream: str) -> str:
    """The event types of `stream` with their versions, for generated documentation."""
    kinds = ", ".join(f"{t.name} v{t.version}" for t in REGISTRY.values() if t.stream == stream)
    return f"Event envelopes (JSON) of types: {kinds}"


class InvalidEvent(ValueError):
    """An event no handler can ever apply; it goes to the dead letters without retries."""

    def __init__(self, reason: str, event: Envelope | None = None) -> None:
        super().__init__(reason)
        self.event = event  # the envelope, when the message was one


def validate(event: Envelope) -> Envelope:
    """Upcast `event` to the current version of its type and validate its data."""
    known = REGISTRY.get(event.type)
    if known is None:
        raise InvalidEvent(f"unknown event type {event.type!r}")
    data, version = dict(event.data), event.version
    if version > known.version:
        raise InvalidEvent(f"{event.type} version {version} is newer than {known.version}")
    while version < known.version:
        step = UPCASTERS.get((event.type, version))
        if step is None:
            raise InvalidEvent(f"no upcaster for {event.type} version {version}")
        data, version = step(data), version + 1
    try:
        parsed = known.schema.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {event.type} data: {_first_error(exc)}") from exc
    return event.model_copy(update={"version": version, "data": parsed.model_dump(mode="json")})


def parse(raw: bytes) -> Envelope:
    """Decode, upcast and validate one message body, or raise InvalidEvent saying why."""
    try:
        event = Envelope.from_bytes(raw)
    except ValidationError as exc:
        kind = "not valid JSON" if exc.errors()[0]["type"] == "json_invalid" else "not an envelope"
        raise InvalidEvent(f"{kind}: {_first_error(exc)}") from exc
    try:
        return validate(event)
    except InvalidEvent as exc:
        raise InvalidEvent(str(exc), event) from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
