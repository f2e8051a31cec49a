"""The end-to-end suite runs against whatever stack is up: `make local-up` or docker compose.

Where each service answers comes from USER_URL, NOTIFICATION_URL, ANALYTICS_URL and
BILLING_URL (defaults: localhost ports 8001-8004).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

SERVICES = {"user": 8001, "notification": 8002, "analytics": 8003, "billing": 8004}


def service_url(name: str) -> str:
    return os.environ.get(f"{name.upper()}_URL", f"http://localhost:{SERVICES[name]}")


@pytest.fixture(scope="session")
def clients() -> Iterator[dict[str, httpx.Client]]:
    clients = {name: httpx.Client(base_url=service_url(name), timeout=10) for name in SERVICES}
    not_ready = []
    for name, client in clients.items():
        try:
            status = client.get("/ready").status_code
        except httpx.HTTPError as exc:
            status = repr(exc)
        if status != 200:
            not_ready.append(f"{name} at {client.base_url}: {status}")
    if not_ready:
        pytest.fail("stack not ready (start it with `make local-up`): " + "; ".join(not_ready))
    yield clients
    for client in clients.values():
        client.close()


def _client_of(name: str) -> Any:
    @pytest.fixture(name=name)
    def fixture(clients: dict[str, httpx.Client]) -> httpx.Client:
        return clients[name]

    return fixture


user = _client_of("user")
notification = _client_of("notification")
analytics = _client_of("analytics")
billing = _client_of("billing")


def unique_email() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def new_user(user: httpx.Client) -> Callable[[str], dict[str, Any]]:
    """Creates a user with a fresh email through the API; asserts the 201."""

    def create(name: str = "Ada") -> dict[str, Any]:
        response = user.post("/users", json={"name": name, "email": unique_email()})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create
