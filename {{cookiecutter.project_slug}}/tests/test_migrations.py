"""Each service's migrations build exactly the tables its models describe, on every database."""

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from eventkit.db import Base, Database
from eventkit.migrations import upgrade_async

SERVICES = ["user", "notification", "analytics", "billing"]
EVENTKIT_TABLES = {"outbox", "inbox", "dead_letters"}


def service_metadata(service: str) -> MetaData:
    models = importlib.import_module(f"{service}_service.models")
    own = {
        obj.__table__.name
        for obj in vars(models).values()
        if isinstance(obj, type) and issubclass(obj, Base) and obj.__module__ == models.__name__
    }
    metadata = MetaData()
    for name in own | EVENTKIT_TABLES:
        Base.metadata.tables[name].to_metadata(metadata)
    return metadata


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_the_models(service: str, database_url: str) -> None:
    package = importlib.import_module(f"{service}_service")
    await upgrade_async(database_url, Path(package.__file__).parent / "migrations")
    metadata = service_metadata(service)

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    db = Database(database_url)
    async with db.engine.connect() as connection:
        changes = await connection.run_sync(diff)
    await db.dispose()
    unexpected = [
        c
        for c in changes
        if not (isinstance(c, tuple) and c[0] == "remove_table" and c[1].name == "alembic_version")
    ]
    assert unexpected == []
