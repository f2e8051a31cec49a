"""Envelopes, and the registry that tells a valid event from one no handler can apply."""

import json
import uuid

import pytest

from eventkit import Envelope, EventRegistry, EventType, InvalidEvent, new_event
from sample_domain import THINGS, Happened, happened, things_registry


def test_envelope_round_trips_through_bytes() -> None:
    event = happened()
    assert Envelope.from_bytes(event.to_bytes()) == event
    assert event.timestamp.tzinfo is not None
    assert event.correlation_id == str(event.id)
    assert (event.aggregate_id, event.sequence) == ("t1", None)


def test_caused_event_keeps_the_correlation_id() -> None:
    cause = happened()
    effect = new_event("Vanished", {"thing_id": "t1"}, source="test", causation=cause)
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == str(cause.id)


def test_envelope_is_immutable() -> None:
    event = happened()
    with pytest.raises(ValueError):
        event.type = "Vanished"  # type: ignore[misc]


def test_parse_accepts_a_valid_event() -> None:
    event = happened(note="hi")
    assert things_registry().parse(event.to_bytes()).data == event.data


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"hello": "world"}', "not an envelope"),
        (
            json.dumps({"id": str(uuid.uuid4()), "type": "Nope", "source": "x"}).encode(),
            "unknown event type 'Nope'",
        ),
        (json.dumps({"type": "Vanished", "source": "x"}).encode(), "not an envelope: id: "),
        (new_event("Happened", {}, source="x").to_bytes(), "invalid Happened data: thing_id"),
        (
            new_event("Vanished", {"thing_id": "u"}, source="x", version=7).to_bytes(),
            "newer than 1",
        ),
    ],
)
def test_parse_says_why_a_message_is_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        things_registry().parse(raw)


def test_an_upcaster_lifts_an_old_version() -> None:
    registry = EventRegistry([EventType("Happened", THINGS, 2, Happened)])
    old = new_event("Happened", {"thing_id": "t", "text": "hi"}, source="x", version=1)
    with pytest.raises(InvalidEvent, match="no upcaster for Happened version 1"):
        registry.parse(old.to_bytes())

    @registry.upcaster("Happened", 1)
    def rename_field(data: dict[str, str]) -> dict[str, str]:
        return {"thing_id": data["thing_id"], "note": data["text"]}

    lifted = registry.parse(old.to_bytes())
    assert lifted.version == 2
    assert lifted.data == {"thing_id": "t", "note": "hi"}
