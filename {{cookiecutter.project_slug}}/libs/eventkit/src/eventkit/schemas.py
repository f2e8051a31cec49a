"""Schema evolution: each event type's JSON Schema against a committed snapshot of it.

A change that events already written would not fit (a field removed, its type changed, an
optional field made required, a new required field) needs a new version of the type and
an upcaster from the old one. Adding an optional field is safe. The snapshot keeps every
version's schema, so the catalog can show them all.
"""

from __future__ import annotations

from typing import Any

from eventkit.registry import EventRegistry

Snapshot = dict[str, dict[str, dict[str, Any]]]  # type -> version -> JSON Schema
IGNORED = {"title", "description", "default", "examples"}


def current(registry: EventRegistry) -> Snapshot:
    return {t.name: {str(t.version): t.schema.model_json_schema()} for t in registry}


def refreshed(registry: EventRegistry, snapshot: Snapshot) -> Snapshot:
    """The snapshot with each type's current version written in; older versions kept."""
    merged = {name: dict(versions) for name, versions in snapshot.items()}
    for name, versions in current(registry).items():
        merged.setdefault(name, {}).update(versions)
    return {
        name: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
        for name, v in sorted(merged.items())
    }


def problems(registry: EventRegistry, snapshot: Snapshot) -> list[str]:
    """One line per incompatible change, naming the event and the field."""
    found: list[str] = []
    for event_type in registry:
        name, version = event_type.name, event_type.version
        versions = snapshot.get(name, {})
        schema = event_type.schema.model_json_schema()
        if str(version) in versions:
            found += [
                f"{name} v{version}: {problem}; keep it, or make {name} v{version + 1} "
                f"with an upcaster from v{version}"
                for problem in incompatible(versions[str(version)], schema)
            ]
            continue
        older = [int(v) for v in versions if int(v) < version]
        newer = [int(v) for v in versions if int(v) > version]
        if newer:
            found.append(f"{name}: version {version} is older than the snapshot's v{max(newer)}")
        if older:
            found += [
                f"{name} v{step + 1}: no upcaster from v{step} "
                f"(@registry.upcaster({name!r}, {step}))"
                for step in range(max(older), version)
                if (name, step) not in registry.upcasters
            ]
    return found


def incompatible(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What in `new` an event written under `old` would not fit."""
    old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    found = [f"field {field!r} removed" for field in old_fields if field not in new_fields]
    for field, spec in new_fields.items():
        if field not in old_fields:
            if field in new_required:
                found.append(f"new field {field!r} is required (old events lack it)")
        elif _shape(spec) != _shape(old_fields[field]):
            found.append(f"field {field!r} changed its type")
        elif field in new_required and field not in old_required:
            found.append(f"field {field!r} became required")
    return found


def _shape(spec: Any) -> Any:
    if isinstance(spec, dict):
        return {k: _shape(v) for k, v in spec.items() if k not in IGNORED}
    if isinstance(spec, list):
        return [_shape(v) for v in spec]
    return spec
