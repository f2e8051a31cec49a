"""The user aggregate: its state is whatever replaying its events gives.

Commands (`create`, `change`, `deactivate`) check the rules against the current state
and return the new events; they never touch storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from contracts import EVENTS
from eventkit import Envelope, new_event

SOURCE = "user"


class RuleViolation(Exception):
    """The command is not allowed in the aggregate's current state (HTTP 409)."""


@dataclass
class User:
    id: str
    name: str = ""
    email: str = ""
    status: str = "active"
    locale: str = "en"
    version: int = 0
    pending: list[Envelope] = field(default_factory=list, repr=False)

    def apply(self, event: Envelope) -> None:
        data = event.data
        match event.type:
            case "UserCreated":
                self.name, self.email, self.status = data["name"], data["email"], "active"
                self.locale = data.get("locale", "en")  # v1 events carry none
            case "NameChanged":
                self.name = data["new_name"]
            case "EmailChanged":
                self.email = data["new_email"]
            case "UserDeactivated":
                self.status = "deactivated"
        self.version += 1

    @classmethod
    def replay(cls, user_id: str, events: Iterable[Envelope]) -> User:
        user = cls(id=user_id)
        for event in events:
            user.apply(event)
        return user

    @classmethod
    def create(cls, user_id: str, name: str, email: str, locale: str = "en") -> User:
        user = cls(id=user_id)
        user._record("UserCreated", {"name": name, "email": email, "locale": locale})
        return user

    def change(self, name: str | None = None, email: str | None = None) -> None:
        self._require_active()
        if name is not None and name != self.name:
            self._record("NameChanged", {"new_name": name})
        if email is not None and email != self.email:
            self._record("EmailChanged", {"new_email": email})

    def deactivate(self) -> None:
        self._require_active()
        self._record("UserDeactivated", {})

    def _require_active(self) -> None:
        if self.status != "active":
            raise RuleViolation(f"user {self.id} is {self.status}; it cannot change")

    def _record(self, event_type: str, data: dict[str, Any]) -> None:
        event = new_event(
            event_type,
            {"user_id": self.id, **data},
            source=SOURCE,
            version=EVENTS[event_type].version,
            aggregate_id=self.id,
            sequence=self.version + 1,
        )
        self.apply(event)
        self.pending.append(event)
