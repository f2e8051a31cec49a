"""The whole domain over the real broker: every event type reaches every read model,
the read models agree with the event store and the invoices, and a rebuild equals live."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from typing import Any

from contracts import USER_EVENTS
from eventkit.testing import WaitTimeout, wait_until
from tests.e2e.services import Services

TIMEOUT = 60.0


def kinds_for(services: Services, user_id: str) -> list[str]:
    return sorted(n["kind"] for n in services.notifications_of(user_id))


def settled_stats(services: Services) -> dict[str, Any]:
    """/stats once it stops moving, so events of earlier tests are not counted as ours."""
    previous: dict[str, Any] = {}

    def unchanged() -> dict[str, Any] | None:
        nonlocal previous
        current = services.stats()
        if current == previous:
            return current
        previous = current
        return None

    return wait_until(unchanged, timeout=TIMEOUT, interval=1.0, what="analytics to settle")


def test_one_users_lifecycle_reaches_every_read_model(services: Services) -> None:
    user, billing = services.user, services.billing
    before = services.stats()
    created = services.new_user("Ada")
    url = f"/users/{created['id']}"
    wait_until(
        lambda: services.account_of(created["id"]),
        timeout=TIMEOUT,
        what="billing to open the account",
    )
    assert user.patch(url, json={"name": "Ada L."}).json()["version"] == 2
    new_email = f"changed-{created['email']}"
    assert user.patch(url, json={"email": new_email}, headers={"If-Match": "2"}).status_code == 200
    stale = user.patch(url, json={"name": "late"}, headers={"If-Match": "2"})
    assert stale.status_code == 409
    wait_until(
        lambda: billing.get(f"/accounts/{created['id']}").json()["email"] == new_email,
        timeout=TIMEOUT,
        what="billing to follow the email change",
    )
    invoice = billing.post("/invoices", json={"user_id": created["id"], "amount": "42.50"})
    assert invoice.status_code == 201
    assert user.delete(url).json()["status"] == "deactivated"
    assert user.patch(url, json={"name": "after"}).status_code == 409

    wait_until(
        lambda: billing.get(f"/accounts/{created['id']}").json()["status"] == "deactivated",
        timeout=TIMEOUT,
        what="billing to see the deactivation",
    )
    late = billing.post("/invoices", json={"user_id": created["id"], "amount": "1"})
    assert late.status_code == 409
    expected = sorted(["welcome", "email_changed", "invoice_issued", "goodbye"])
    wait_until(
        lambda: kinds_for(services, created["id"]) == expected,
        timeout=TIMEOUT,
        what=f"notifications {expected} for {created['id']}",
    )

    def counted() -> bool:
        now = services.stats()
        return (
            now["users_created"] - before["users_created"] >= 1
            and now["users_deactivated"] - before["users_deactivated"] >= 1
            and now["invoices_issued"] - before["invoices_issued"] >= 1
            and Decimal(now["revenue_total"]) - Decimal(before["revenue_total"]) >= Decimal("42.50")
        )

    wait_until(counted, timeout=TIMEOUT, what="analytics to count the lifecycle")
    history = [e["type"] for e in user.get(f"{url}/events").json()]
    assert history == ["UserCreated", "NameChanged", "EmailChanged", "UserDeactivated"]
    assert user.get(url, params={"version": 1}).json()["name"] == "Ada"


def test_invoice_errors(services: Services) -> None:
    billing = services.billing
    assert billing.post("/invoices", json={"user_id": "nobody", "amount": "5"}).status_code == 404
    created = services.new_user("Bo")
    wait_until(
        lambda: services.account_of(created["id"]),
        timeout=TIMEOUT,
        what="billing to open the account",
    )
    bad = billing.post("/invoices", json={"user_id": created["id"], "amount": "0"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][-1] == "amount"


def test_scenario_read_models_agree_with_the_sources_and_rebuild_equals_live(
    services: Services,
) -> None:
    """50 sign-ups, 20 renames, 10 email changes, 5 deactivations, 30 invoices."""
    user, billing = services.user, services.billing
    rng = random.Random(7)
    before = settled_stats(services)
    users = [services.new_user(f"scenario {n}") for n in range(50)]
    ids = [u["id"] for u in users]
    wait_until(
        lambda: all(services.account_of(i) for i in ids),
        timeout=TIMEOUT,
        what="billing to open all 50 accounts",
    )
    for i in rng.sample(ids, 20):
        assert user.patch(f"/users/{i}", json={"name": f"renamed {i[:8]}"}).status_code == 200
    for i in rng.sample(ids, 10):
        new_email = f"moved-{i[:8]}@example.com"
        assert user.patch(f"/users/{i}", json={"email": new_email}).status_code == 200
    amounts = [Decimal(rng.randint(100, 99999)) / 100 for _ in range(30)]
    invoiced = rng.sample(ids, 30)
    for i, amount in zip(invoiced, amounts, strict=True):
        response = billing.post("/invoices", json={"user_id": i, "amount": str(amount)})
        assert response.status_code == 201, response.text
    deactivated = rng.sample(ids, 5)
    for i in deactivated:
        assert user.delete(f"/users/{i}").status_code == 200

    truth = {i: user.get(f"/users/{i}").json() for i in ids}
    revenue = sum(amounts, Decimal("0"))

    def billing_view() -> dict[str, tuple[str, str]]:
        accounts = {i: billing.get(f"/accounts/{i}").json() for i in ids}
        return {i: (a["email"], a["status"]) for i, a in accounts.items()}

    expected_billing = {i: (u["email"], u["status"]) for i, u in truth.items()}
    wait_until(
        lambda: billing_view() == expected_billing,
        timeout=TIMEOUT,
        what="billing accounts to match the user event store",
    )

    def expected_kinds(i: str) -> list[str]:
        history = [e["type"] for e in user.get(f"/users/{i}/events").json()]
        kinds = {
            "UserCreated": "welcome",
            "EmailChanged": "email_changed",
            "UserDeactivated": "goodbye",
        }
        return sorted(
            [kinds[t] for t in history if t in kinds] + ["invoice_issued"] * invoiced.count(i)
        )

    expected_notifications = {i: expected_kinds(i) for i in ids}

    def notification_view() -> dict[str, list[str]]:
        return {i: kinds_for(services, i) for i in ids}

    wait_until(
        lambda: notification_view() == expected_notifications,
        timeout=TIMEOUT,
        what="notifications to match the event store and the invoices",
    )
    history_counts = Counter(e["type"] for i in ids for e in user.get(f"/users/{i}/events").json())
    expected_delta = {
        "users_created": 50,
        "users_deactivated": 5,
        "invoices_issued": 30,
        "revenue_total": revenue,
        "NameChanged": history_counts["NameChanged"],
        "EmailChanged": history_counts["EmailChanged"],
    }

    def analytics_delta() -> dict[str, Any]:
        now = services.stats()
        return {
            "users_created": now["users_created"] - before["users_created"],
            "users_deactivated": now["users_deactivated"] - before["users_deactivated"],
            "invoices_issued": now["invoices_issued"] - before["invoices_issued"],
            "revenue_total": Decimal(now["revenue_total"]) - Decimal(before["revenue_total"]),
            "NameChanged": now["events_by_type"].get("NameChanged", 0)
            - before["events_by_type"].get("NameChanged", 0),
            "EmailChanged": now["events_by_type"].get("EmailChanged", 0)
            - before["events_by_type"].get("EmailChanged", 0),
        }

    observed: dict[str, Any] = {}

    def counted_exactly() -> bool:
        observed.update(analytics_delta())
        return observed == expected_delta

    try:
        wait_until(counted_exactly, timeout=TIMEOUT, what="analytics to count the scenario")
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}: expected {expected_delta}, last seen {observed}") from None
    totals = {i: billing.get(f"/accounts/{i}").json()["invoiced_total"] for i in set(invoiced)}
    assert sum(Decimal(t) for t in totals.values()) == revenue

    # Rebuild each read model from the feeds: it must equal what was built live.
    live = (services.stats(), billing_view(), notification_view())
    for service in (services.analytics, billing, services.notification):
        response = service.post("/admin/rebuild")
        assert response.status_code == 200, response.text
        assert response.json()["replayed"][USER_EVENTS] >= 50 + 20 + 10 + 5
    assert (services.stats(), billing_view(), notification_view()) == live
