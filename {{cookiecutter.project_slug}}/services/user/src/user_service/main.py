"""The user service's app: HTTP routes and the outbox relay; it subscribes to nothing."""

from pathlib import Path

from fastapi import FastAPI

from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport
from user_service.api import router
from user_service.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    return create_service(
        settings or Settings(),
        ROSTER,
        title="user service",
        routers=[router],
        transport=transport,
        migrations=MIGRATIONS,
    )
