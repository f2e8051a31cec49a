"""Fixtures shared by every service's tests and eventkit's.

`database_url` gives each test a fresh database: a SQLite file always, and also a new
PostgreSQL database when TEST_POSTGRES_URL points at a server (for example
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

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
from eventkit.transports.memory import MemoryTransport

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


@pytest.fixture
def transport() -> MemoryTransport:
    """The broker stand-in for a service's unit tests (real brokers: eventkit's and e2e tests)."""
    return MemoryTransport()


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
