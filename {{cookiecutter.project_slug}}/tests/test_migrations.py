"""Each service's migrations build exactly its models' tables and eventkit's, on every database.

eventkit's tables are those its own Alembic branch (`eventkit@head`) builds; a service's
history adds only its read models.
"""

import asyncio
import importlib
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Connection

from contracts import ROSTER
from eventkit.db import Base, Database
from eventkit.migrations import EVENTKIT_BRANCH, config, upgrade_async


def migrations_of(service: str) -> Path:
    package = importlib.import_module(f"{service}_service")
    assert package.__file__ is not None
    return Path(package.__file__).parent / "migrations"


async def tables(database_url: str) -> set[str]:
    db = Database(database_url)
    async with db.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await db.dispose()
    return names - {"alembic_version"}


async def eventkit_tables(service: str, database_url: str) -> set[str]:
    """What eventkit's branch alone builds, in a database of its own."""
    cfg = config(database_url, migrations_of(service))
    await asyncio.to_thread(command.upgrade, cfg, f"{EVENTKIT_BRANCH}@head")
    return await tables(database_url)


def service_metadata(service: str, shared: set[str]) -> MetaData:
    models = importlib.import_module(f"{service}_service.models")
    own: set[str] = set()
    for obj in vars(models).values():
        if isinstance(obj, type) and issubclass(obj, Base) and obj.__module__ == models.__name__:
            assert isinstance(obj.__table__, Table)  # a FromClause to the type checker
            own.add(obj.__table__.name)
    metadata = MetaData()
    for name in own | shared:
        Base.metadata.tables[name].to_metadata(metadata)
    return metadata


@pytest.mark.parametrize("service", ROSTER.names)
async def test_migrations_match_the_models(service: str, database_url: str, tmp_path: Path) -> None:
    shared = await eventkit_tables(service, f"sqlite+aiosqlite:///{tmp_path / 'eventkit.db'}")
    assert shared, "eventkit's branch builds no table"
    await upgrade_async(database_url, migrations_of(service))
    metadata = service_metadata(service, shared)

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
