"""The event envelope every service publishes and consumes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from eventkit import context


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One immutable event; `data` is validated against the event registry on consume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Required: a consumer deduplicates by it, so it never invents one for a message it got.
    id: uuid.UUID
    type: str = Field(min_length=1)
    version: int = Field(default=1, ge=1)
    timestamp: datetime = Field(default_factory=_now)
    source: str = Field(min_length=1)
    correlation_id: str | None = None
    causation_id: str | None = None
    # The aggregate the event belongs to (the partition key) and its 1-based place in that
    # aggregate's history; events from elsewhere may lack them.
    aggregate_id: str | None = None
    sequence: int | None = Field(default=None, ge=1)
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """What orders it: the broker's partition or routing key, the inbox's position row.
        Events of no aggregate share one key, ""."""
        return self.aggregate_id or ""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)


def new_event(
    type: str,
    data: dict[str, Any],
    *,
    source: str,
    version: int = 1,
    aggregate_id: str | None = None,
    sequence: int | None = None,
    correlation_id: str | None = None,
    causation: Envelope | None = None,
) -> Envelope:
    """Build an envelope; a caused event inherits the correlation id of its cause."""
    event_id = uuid.uuid4()
    correlation_id = correlation_id or context.correlation_id.get()
    if causation is not None:
        correlation_id = correlation_id or causation.correlation_id or str(causation.id)
    return Envelope(
        id=event_id,
        type=type,
        version=version,
        source=source,
        correlation_id=correlation_id or str(event_id),
        causation_id=str(causation.id) if causation is not None else None,
        aggregate_id=aggregate_id,
        sequence=sequence,
        data=data,
    )
