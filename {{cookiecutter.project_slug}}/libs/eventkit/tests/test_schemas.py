"""The schema check: incompatible changes need a new version and an upcaster."""

from eventkit import EventData, EventRegistry, EventType
from eventkit.schemas import current, problems, refreshed
from sample_domain import THINGS, Happened, things_registry


class HappenedWithout(EventData):  # `note` removed
    thing_id: str


class HappenedRetyped(EventData):
    thing_id: int
    note: str = ""


class HappenedStricter(EventData):  # `note` now required
    thing_id: str
    note: str


class HappenedWithMore(EventData):  # an optional field added
    thing_id: str
    note: str = ""
    mood: str = "calm"


def registry_of(schema: type[EventData], version: int = 1) -> EventRegistry:
    return EventRegistry([EventType("Happened", THINGS, version, schema)])


def test_an_unchanged_registry_passes() -> None:
    registry = things_registry()
    assert problems(registry, current(registry)) == []


def test_each_incompatible_change_is_named_with_its_event_and_field() -> None:
    snapshot = current(registry_of(Happened))
    assert problems(registry_of(HappenedWithout), snapshot) == [
        "Happened v1: field 'note' removed; keep it, or make Happened v2 with an upcaster from v1"
    ]
    assert (
        "field 'thing_id' changed its type" in problems(registry_of(HappenedRetyped), snapshot)[0]
    )
    assert "field 'note' became required" in problems(registry_of(HappenedStricter), snapshot)[0]


def test_an_added_optional_field_passes_and_the_refresh_records_it() -> None:
    snapshot = current(registry_of(Happened))
    assert problems(registry_of(HappenedWithMore), snapshot) == []
    assert (
        "mood" in refreshed(registry_of(HappenedWithMore), snapshot)["Happened"]["1"]["properties"]
    )


def test_a_new_version_needs_an_upcaster_and_keeps_the_old_schema() -> None:
    snapshot = current(registry_of(Happened))
    bumped = registry_of(HappenedWithout, version=2)
    assert problems(bumped, snapshot) == [
        "Happened v2: no upcaster from v1 (@registry.upcaster('Happened', 1))"
    ]
    bumped.upcaster("Happened", 1)(lambda data: {"thing_id": data["thing_id"]})
    assert problems(bumped, snapshot) == []
    assert set(refreshed(bumped, snapshot)["Happened"]) == {"1", "2"}
