"""An event registry: which event types exist, their stream, schema version and data schema.

eventkit knows no event of its own: the project's contracts build one registry and hand it
to each service, so every consumer can tell an unknown or malformed event from one it
simply does not handle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from eventkit.envelope import Envelope

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventData(BaseModel):
    """Base of every event's data schema: immutable, and no field it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class EventType:
    name: str
    stream: str
    version: int
    schema: type[EventData]


class InvalidEvent(ValueError):
    """An event no handler can ever apply; it goes to the dead letters without retries."""

    def __init__(self, reason: str, event: Envelope | None = None) -> None:
        super().__init__(reason)
        self.event = event  # the envelope, when the message was one


class UnknownEvent(InvalidEvent):
    """An event of a type, or a version, this registry does not know yet: its publisher was
    deployed before this consumer. The next deploy may know it, so it is retried for a
    while rather than dead-lettered at once."""

    def __init__(self, reason: str, event: Envelope) -> None:
        super().__init__(reason, event)
        self.event: Envelope = event


class EventRegistry:
    """The event types of a system and the upcasters that lift old versions to current."""

    def __init__(self, types: Iterable[EventType]) -> None:
        self._types = {t.name: t for t in types}
        # (type, from_version) -> function turning that version's data into the next version's.
        self.upcasters: dict[tuple[str, int], Upcaster] = {}

    def __getitem__(self, name: str) -> EventType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._types.values())

    def of_stream(self, stream: str) -> list[EventType]:
        return [t for t in self if t.stream == stream]

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function that lifts `event_type` data from `from_version` to the next."""

        def register(fn: Upcaster) -> Upcaster:
            self.upcasters[(event_type, from_version)] = fn
            return fn

        return register

    def describe(self, stream: str) -> str:
        """The event types of `stream` with their versions, for generated documentation."""
        kinds = ", ".join(f"{t.name} v{t.version}" for t in self.of_stream(stream))
        return f"Event envelopes (JSON) of types: {kinds}"

    def validate(self, event: Envelope) -> Envelope:
        """Upcast `event` to the current version of its type and validate its data."""
        known = self._types.get(event.type)
        if known is None:
            raise UnknownEvent(f"unknown event type {event.type!r}", event)
        data, version = dict(event.data), event.version
        if version > known.version:
            raise UnknownEvent(
                f"{event.type} version {version} is newer than {known.version}", event
            )
        while version < known.version:
            step = self.upcasters.get((event.type, version))
            if step is None:
                raise InvalidEvent(f"no upcaster for {event.type} version {version}", event)
            data, version = step(data), version + 1
        try:
            parsed = known.schema.model_validate(data)
        except ValidationError as exc:
            raise InvalidEvent(f"invalid {event.type} data: {_first_error(exc)}", event) from exc
        return event.model_copy(update={"version": version, "data": parsed.model_dump(mode="json")})

    def parse(self, raw: bytes) -> Envelope:
        """Decode, upcast and validate one message body, or raise InvalidEvent saying why."""
        try:
            event = Envelope.from_bytes(raw)
        except ValidationError as exc:
            first = exc.errors()[0]["type"]
            kind = "not valid JSON" if first == "json_invalid" else "not an envelope"
            raise InvalidEvent(f"{kind}: {_first_error(exc)}") from exc
        return self.validate(event)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
