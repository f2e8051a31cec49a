"""The analytics service's app: its read model's routes and its subscribers."""

from pathlib import Path

from fastapi import FastAPI

from analytics_service.api import router
from analytics_service.handlers import consumer
from analytics_service.models import EventCount, Revenue
from analytics_service.settings import Settings
from eventkit import create_service
from eventkit.transport import Transport

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    return create_service(
        settings or Settings(),
        title="analytics service",
        routers=[router],
        consumer=consumer,
        read_models=[EventCount, Revenue],
        transport=transport,
        migrations=MIGRATIONS,
    )
