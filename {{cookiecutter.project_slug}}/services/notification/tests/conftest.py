import pytest
from fastapi import FastAPI

from eventkit.transports.memory import MemoryTransport
from notification_service.main import create_app
from notification_service.settings import Settings


@pytest.fixture
def app(database_url: str, transport: MemoryTransport) -> FastAPI:
    return create_app(Settings(DATABASE_URL=database_url), transport=transport)
