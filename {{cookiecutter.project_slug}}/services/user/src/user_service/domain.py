"""The user aggregate: its state is whatever replaying its events gives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eventkit import Envelope


@dataclass
class User:
    id: str
    name: str = ""
    email: str = ""
    status: str = "active"
    version: int = 0

    def apply(self, event: Envelope) -> None:
        data = event.data
        match event.type:
            case "UserCreated":
                self.name, self.email, self.status = data["name"], data["email"], "active"
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
