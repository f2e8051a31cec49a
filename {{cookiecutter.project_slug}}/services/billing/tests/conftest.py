import pytest
from fastapi import FastAPI

from billing_service.main import create_app
from billing_service.settings import Settings
from eventkit.transports.memory import MemoryTransport


@pytest.fixture
def app(database_url: str, transport: MemoryTransport) -> FastAPI:
    return create_app(Settings(DATABASE_URL=database_url), transport=transport)
