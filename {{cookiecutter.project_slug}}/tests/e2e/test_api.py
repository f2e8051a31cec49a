"""Platform endpoints and error answers of the running services."""

from __future__ import annotations

import uuid

import httpx
import pytest

from contracts import ROSTER


@pytest.mark.parametrize("name", ROSTER.names)
def test_platform_endpoints(clients: dict[str, httpx.Client], name: str) -> None:
    client = clients[name]
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.get("/asyncapi").json()["asyncapi"].startswith("3.")
    assert client.get("/docs").status_code == 200


def test_user_read_back_and_errors(user: httpx.Client) -> None:
    email = f"e2e-{uuid.uuid4().hex[:10]}@example.com"
    created = user.post("/users", json={"name": "Bo", "email": email})
    assert created.status_code == 201
    assert user.get(f"/users/{created.json()['id']}").json() == created.json()

    taken = user.post("/users", json={"name": "Bo again", "email": email})
    assert taken.status_code == 409
    assert email in taken.json()["detail"]

    bad = user.post("/users", json={"name": "No email"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "email"]

    unknown = user.get("/users/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404
    assert "detail" in unknown.json()


def test_unknown_account_is_404(billing: httpx.Client) -> None:
    response = billing.get("/accounts/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "detail" in response.json()
