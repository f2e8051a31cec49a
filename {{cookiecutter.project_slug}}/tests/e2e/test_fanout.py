"""One UserCreated, published once by the user service, reaches every read model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventkit.testing import wait_until
from tests.e2e.services import Services

TIMEOUT = 30.0


def welcomes_of(services: Services, user_id: str) -> list[dict[str, Any]]:
    return [n for n in services.notifications_of(user_id) if n["kind"] == "welcome"]


def users_created(services: Services) -> int:
    return int(services.stats()["users_created"])


def test_user_created_reaches_all_three_read_models(services: Services) -> None:
    before = users_created(services)
    created = services.new_user("Ada")
    user_id = str(created["id"])

    account = wait_until(
        lambda: services.account_of(user_id), timeout=TIMEOUT, what=f"billing account {user_id}"
    )
    assert account["email"] == created["email"]
    assert account["status"] == "active"
    welcome = wait_until(
        lambda: welcomes_of(services, user_id),
        timeout=TIMEOUT,
        what=f"notification welcome for {user_id}",
    )
    assert len(welcome) == 1
    assert welcome[0]["recipient"] == created["email"]
    wait_until(
        lambda: users_created(services) >= before + 1,
        timeout=TIMEOUT,
        what="analytics users_created to count the new user",
    )


def test_many_users_all_fan_out(services: Services) -> None:
    before = users_created(services)
    ids = [str(services.new_user(f"user {n}")["id"]) for n in range(20)]

    def missing_from_billing() -> list[str]:
        return [i for i in ids if services.account_of(i) is None]

    def missing_from_notification() -> list[str]:
        return [i for i in ids if not welcomes_of(services, i)]

    for what, missing in [
        ("billing accounts", missing_from_billing),
        ("notification welcomes", missing_from_notification),
    ]:

        def none_missing(missing: Callable[[], list[str]] = missing) -> bool:
            return not missing()

        wait_until(none_missing, timeout=TIMEOUT, what=f"{what} for 20 users")
    wait_until(
        lambda: users_created(services) >= before + 20,
        timeout=TIMEOUT,
        what=f"analytics users_created to reach {before + 20}",
    )
    # Redelivery never doubles a welcome.
    assert all(len(welcomes_of(services, i)) == 1 for i in ids)
