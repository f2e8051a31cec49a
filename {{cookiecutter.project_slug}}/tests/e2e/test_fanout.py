"""One UserCreated, published once by the user service, reaches every read model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from eventkit.testing import wait_until

TIMEOUT = 30.0


def account_of(billing: httpx.Client, user_id: str) -> dict[str, Any] | None:
    response = billing.get(f"/accounts/{user_id}")
    return response.json() if response.status_code == 200 else None


def welcomes_of(notification: httpx.Client, user_id: str) -> list[dict[str, Any]]:
    sent = notification.get("/notifications", params={"user_id": user_id}).json()
    return [n for n in sent if n["kind"] == "welcome"]


def users_created(analytics: httpx.Client) -> int:
    return int(analytics.get("/stats").json()["users_created"])


def test_user_created_reaches_all_three_read_models(
    new_user: Callable[[str], dict[str, Any]],
    billing: httpx.Client,
    notification: httpx.Client,
    analytics: httpx.Client,
) -> None:
    before = users_created(analytics)
    created = new_user("Ada")
    user_id = str(created["id"])

    account = wait_until(
        lambda: account_of(billing, user_id), timeout=TIMEOUT, what=f"billing account {user_id}"
    )
    assert account["email"] == created["email"]
    assert account["status"] == "active"
    welcome = wait_until(
        lambda: welcomes_of(notification, user_id),
        timeout=TIMEOUT,
        what=f"notification welcome for {user_id}",
    )
    assert len(welcome) == 1
    assert welcome[0]["recipient"] == created["email"]
    wait_until(
        lambda: users_created(analytics) >= before + 1,
        timeout=TIMEOUT,
        what="analytics users_created to count the new user",
    )


def test_many_users_all_fan_out(
    new_user: Callable[[str], dict[str, Any]],
    billing: httpx.Client,
    notification: httpx.Client,
    analytics: httpx.Client,
) -> None:
    before = users_created(analytics)
    ids = [str(new_user(f"user {n}")["id"]) for n in range(20)]

    def missing_from_billing() -> list[str]:
        return [i for i in ids if account_of(billing, i) is None]

    def missing_from_notification() -> list[str]:
        return [i for i in ids if not welcomes_of(notification, i)]

    for what, missing in [
        ("billing accounts", missing_from_billing),
        ("notification welcomes", missing_from_notification),
    ]:

        def none_missing(missing: Callable[[], list[str]] = missing) -> bool:
            return not missing()

        wait_until(none_missing, timeout=TIMEOUT, what=f"{what} for 20 users")
    wait_until(
        lambda: users_created(analytics) >= before + 20,
        timeout=TIMEOUT,
        what=f"analytics users_created to reach {before + 20}",
    )
    # Redelivery never doubles a welcome.
    assert all(len(welcomes_of(notification, i)) == 1 for i in ids)
