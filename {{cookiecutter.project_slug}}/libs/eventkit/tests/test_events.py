import json
import uuid

import pytest

from eventkit import Envelope, new_event
from eventkit.events import UPCASTERS, InvalidEvent, parse, upcaster


def user_created(**data: str) -> Envelope:
    payload = {"user_id": str(uuid.uuid4()), "name": "Ada", "email": "ada@example.com"}
    return new_event("UserCreated", {**payload, **data}, source="test")


def test_envelope_round_trips_through_bytes() -> None:
    event = user_created()
    assert Envelope.from_bytes(event.to_bytes()) == event
    assert event.timestamp.tzinfo is not None
    assert event.correlation_id == str(event.id)


def test_caused_event_keeps_the_correlation_id() -> None:
    cause = user_created()
    effect = new_event("UserDeactivated", {"user_id": "u1"}, source="test", causation=cause)
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == str(cause.id)


def test_envelope_is_immutable() -> None:
    event = user_created()
    with pytest.raises(ValueError):
        event.type = "NameChanged"  # type: ignore[misc]


def test_parse_accepts_a_valid_event() -> None:
    event = user_created()
    assert parse(event.to_bytes()).data == event.data


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"hello": "world"}', "not an envelope"),
        (json.dumps({"type": "Nope", "source": "x"}).encode(), "unknown event type 'Nope'"),
        (
            new_event("UserCreated", {"user_id": "u"}, source="x").to_bytes(),
            "invalid UserCreated data: name",
        ),
        (
            new_event("UserDeactivated", {"user_id": "u"}, source="x", version=7).to_bytes(),
            "newer than 1",
        ),
    ],
)
def test_parse_says_why_a_message_is_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse(raw)


def test_an_upcaster_lifts_an_old_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventkit import events

    monkeypatch.setitem(
        events.REGISTRY,
        "NameChanged",
        events.EventType("NameChanged", events.USER_EVENTS, 2, events.NameChanged),
    )
    old = new_event("NameChanged", {"user_id": "u", "name": "Bo"}, source="x", version=1)
    with pytest.raises(InvalidEvent, match="no upcaster for NameChanged version 1"):
        parse(old.to_bytes())

    monkeypatch.setattr(events, "UPCASTERS", dict(UPCASTERS))

    @upcaster("NameChanged", 1)
    def rename_field(data: dict[str, str]) -> dict[str, str]:
        return {"user_id": data["user_id"], "new_name": data["name"]}

    lifted = parse(old.to_bytes())
    assert lifted.version == 2
    assert lifted.data == {"user_id": "u", "new_name": "Bo"}
