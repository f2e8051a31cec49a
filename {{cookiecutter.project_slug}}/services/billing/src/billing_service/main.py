"""The billing service's app: its read model's routes and its subscribers."""

from pathlib import Path

from fastapi import FastAPI

from billing_service.api import router
from billing_service.handlers import subscriptions
from billing_service.models import Account
from billing_service.settings import Settings
from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    return create_service(
        settings or Settings(),
        ROSTER,
        title="billing service",
        routers=[router],
        subscriptions=subscriptions,
        read_models=[Account],
        transport=transport,
        migrations=MIGRATIONS,
    )
