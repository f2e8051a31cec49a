"""eventkit's own migration branch, and replicas migrating one empty database at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from eventkit.db import Database
from eventkit.migrations import upgrade_async

POSTGRES = os.environ.get("TEST_POSTGRES_URL")


def service_without_tables(tmp_path: Path) -> Path:
    """A service whose own history is empty: its database gets eventkit's tables only."""
    location = tmp_path / "migrations"
    (location / "versions").mkdir(parents=True)
    (location / "env.py").write_text("from eventkit.migrations import run_env\n\nrun_env()\n")
    return location


async def tables(database_url: str) -> set[str]:
    db = Database(database_url)
    async with db.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await db.dispose()
    return names


async def test_eventkits_branch_creates_its_tables(database_url: str, tmp_path: Path) -> None:
    await upgrade_async(database_url, service_without_tables(tmp_path))
    assert await tables(database_url) == {
        "alembic_version",
        "outbox",
        "inbox",
        "dead_letters",
        "aggregate_positions",
        "consumer_pause",
    }


@pytest.mark.skipif(not POSTGRES, reason="replicas share a PostgreSQL database")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_four_replicas_migrating_an_empty_database_at_once_all_come_up(
    database_url: str, tmp_path: Path
) -> None:
    location = service_without_tables(tmp_path)
    # Separate processes, as replicas are (Alembic's context is one per process).
    code = (
        "import sys, pathlib; from eventkit.migrations import upgrade; "
        "upgrade(sys.argv[1], pathlib.Path(sys.argv[2]))"
    )
    # Plain processes: asyncio's subprocess transports outlive the test's loop and say so.
    command = [sys.executable, "-c", code, database_url, str(location)]
    replicas = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=60)[1] for p in replicas]
    assert [p.returncode for p in replicas] == [0, 0, 0, 0], errors
    assert "aggregate_positions" in await tables(database_url)
