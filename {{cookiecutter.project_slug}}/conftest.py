"""Fixtures shared by every service's tests and eventkit's.

`database_url` gives each test a fresh database: a SQLite file always, and also a new
PostgreSQL database when TEST_POSTGRES_URL points at a server (for example
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from eventkit.db import Database
from eventkit.testing import running, under_test
from eventkit.transports import Transport

POSTGRES = os.environ.get("TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"] if POSTGRES else ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    assert POSTGRES is not None
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def service_under_test(test_file: Path) -> str:
    """The service whose tests these are: `<name>` of the services/<name>/ they are in."""
    parts = test_file.parts
    if "services" not in parts:
        raise LookupError(f"{test_file} is not a service's test: build the app it needs there")
    return parts[parts.index("services") + 1]


@pytest.fixture
def app(request: pytest.FixtureRequest, database_url: str) -> FastAPI:
    """The service under test on this project's broker adapter; `client` runs it under
    FastStream's test broker. A test that needs the in-process transport instead (to read
    what was published) overrides this and `transport`, and says why."""
    package = f"{service_under_test(request.path)}_service"
    main = importlib.import_module(f"{package}.main")
    settings = importlib.import_module(f"{package}.settings")
    service: FastAPI = main.create_app(settings.Settings(DATABASE_URL=database_url))
    return service


@pytest.fixture
def transport(app: FastAPI) -> Transport:
    """What the service under test publishes and subscribes through: `deliver` to it."""
    adapter: Transport = app.state.kit.transport
    return adapter


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database of eventkit's and the service's tables."""
    database = Database(database_url)
    await database.create_all()
    yield database
    await database.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The `app` fixture of the service under test, running (its broker under FastStream's
    test broker), with an HTTP client for it."""
    async with under_test(app.state.kit.transport), running(app) as http:
        yield http
