import pytest
from fastapi import FastAPI

from eventkit.transports.memory import MemoryTransport
from user_service.main import create_app
from user_service.settings import Settings


@pytest.fixture
def transport() -> MemoryTransport:
    """The in-process transport: the user service only publishes, and its tests read what
    the outbox relay sent (`published`)."""
    return MemoryTransport()


@pytest.fixture
def app(database_url: str, transport: MemoryTransport) -> FastAPI:
    return create_app(Settings(DATABASE_URL=database_url), transport=transport)
