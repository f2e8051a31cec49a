"""Alembic migrations, applied at start-up.

eventkit owns its tables (outbox, inbox, dead letters) in a branch of its own,
`eventkit/migrations/versions`; each service's history holds only its read models. A
service database is at `heads` of both. A service's `migrations/env.py` is two lines:
import its models, then `run_env()`. `upgrade()` runs in a worker thread because Alembic
drives its own event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from eventkit.db import Base, lock_key

EVENTKIT_VERSIONS = Path(__file__).parent / "versions"
EVENTKIT_BRANCH = "eventkit"


def config(database_url: str, script_location: Path) -> Config:
    """A service's Alembic config: its env.py, its own versions and eventkit's."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", f"{EVENTKIT_VERSIONS}:{script_location / 'versions'}")
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, script_location: Path) -> None:
    command.upgrade(config(database_url, script_location), "heads")


async def upgrade_async(database_url: str, script_location: Path) -> None:
    await asyncio.to_thread(upgrade, database_url, script_location)


def run_env() -> None:
    """Body of every service's env.py: migrate the database its URL names."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url))


async def _run_online(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_migrate)
    await engine.dispose()


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting together on an empty database: one migrates, the others
            # wait here, then find it at head. Released when the transaction ends.
            lock = text("SELECT pg_advisory_xact_lock(:k)")
            connection.execute(lock, {"k": lock_key("eventkit-migrations")})
        context.run_migrations()
