"""What the end-to-end tests hold of the running stack: the services one sign-up goes through
(the `services` fixture of tests/conftest.py gives them) and the reads the tests wait on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

NewUser = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Services:
    """The services one sign-up goes through, and how to start one: the user service writes
    it, billing, notification and analytics each build a read model of it. Its methods are
    the reads of those read models that the tests wait on."""

    user: httpx.Client
    billing: httpx.Client
    notification: httpx.Client
    analytics: httpx.Client
    new_user: NewUser

    def account_of(self, user_id: str) -> dict[str, Any] | None:
        """Billing's account of the user; None until billing has opened it."""
        response = self.billing.get(f"/accounts/{user_id}")
        account: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return account

    def notifications_of(self, user_id: str) -> list[dict[str, Any]]:
        """What the notification service has sent the user, of every kind."""
        response = self.notification.get("/notifications", params={"user_id": user_id})
        sent: list[dict[str, Any]] = response.json()
        return sent

    def stats(self) -> dict[str, Any]:
        """Analytics' counts (/stats), over every user, not only a test's own."""
        counts: dict[str, Any] = self.analytics.get("/stats").json()
        return counts
