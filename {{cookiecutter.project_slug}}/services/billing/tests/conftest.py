import pytest
from fastapi import FastAPI

from billing_service.main import create_app
from billing_service.settings import Settings
from eventkit.bus import InProcessTransport


@pytest.fixture
def app(database_url: str, transport: InProcessTransport) -> FastAPI:
    return create_app(Settings(DATABASE_URL=database_url), transport=transport)
