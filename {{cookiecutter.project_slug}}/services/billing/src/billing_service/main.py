"""The billing service's app: its read model's routes and its subscribers."""

from fastapi import FastAPI

from billing_service.api import router
from billing_service.handlers import subscriptions
from billing_service.settings import Settings
from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport


def create_app(settings: Settings | None = None, transport: Transport | None = None) -> FastAPI:
    return create_service(
        settings or Settings(), ROSTER, [router], subscriptions, transport=transport
    )
