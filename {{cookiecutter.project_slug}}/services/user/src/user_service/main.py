"""The user service's app: HTTP routes and the outbox relay; it subscribes to nothing."""

from fastapi import FastAPI

from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport
from user_service.api import router
from user_service.settings import Settings


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    return create_service(settings or Settings(), ROSTER, [router], transport=transport)
