import pytest
from fastapi import FastAPI

from eventkit.transports import Transport
from notification_service.main import create_app
from notification_service.settings import Settings


@pytest.fixture
def app(database_url: str) -> FastAPI:
    """The service on this project's broker: `client` runs it under FastStream's test broker."""
    return create_app(Settings(DATABASE_URL=database_url))


@pytest.fixture
def transport(app: FastAPI) -> Transport:
    transport: Transport = app.state.kit.transport
    return transport
