"""The notification service's app: its read model's routes and its subscribers."""

from fastapi import FastAPI

from eventkit import create_service
from eventkit.transport import Transport
from notification_service.api import router
from notification_service.handlers import consumer
from notification_service.settings import Settings


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    return create_service(
        settings or Settings(),
        title="notification service",
        routers=[router],
        consumer=consumer,
        transport=transport,
    )
