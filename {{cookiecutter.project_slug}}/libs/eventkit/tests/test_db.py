"""The database connection: a statement that hangs fails after the command timeout."""

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from eventkit.db import Database, Leadership, database_unavailable

POSTGRES = os.environ.get("TEST_POSTGRES_URL")


async def test_a_statement_stuck_longer_than_the_command_timeout_fails(database_url: str) -> None:
    """A lock held elsewhere, or a server that stops answering mid-statement, must not
    hold a consumer's batch (or a request) for ever."""
    db = Database(database_url, command_timeout=0.5)
    blocker = Database(database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE stuck (n INTEGER)"))
        async with blocker.engine.connect() as holder:
            # Another connection holds the table's write lock for longer than the timeout.
            if db.is_postgres:
                await holder.execute(text("LOCK TABLE stuck IN ACCESS EXCLUSIVE MODE"))
            else:
                await holder.exec_driver_sql("BEGIN IMMEDIATE")
                await holder.execute(text("INSERT INTO stuck VALUES (1)"))
            started = time.monotonic()
            with pytest.raises((DBAPIError, TimeoutError)):
                async with asyncio.timeout(20):  # the test's own limit, far above the setting
                    async with db.transaction() as session:
                        await session.execute(text("INSERT INTO stuck VALUES (2)"))
            assert time.monotonic() - started < 10
            await holder.rollback()
    finally:
        await db.dispose()
        await blocker.dispose()


async def test_sqlite_runs_each_statement_on_the_event_loops_thread(tmp_path: Path) -> None:
    """No hop to a worker thread and back per call (SQLiteOnTheLoop): it cost more CPU than
    the statements themselves."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'here.db'}")

    def thread_function(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.create_function("thread_id", 0, threading.get_ident)

    event.listen(db.engine.sync_engine, "connect", thread_function)
    threads = threading.active_count()
    try:
        async with db.transaction() as session:
            assert await session.scalar(text("SELECT thread_id()")) == threading.get_ident()
        assert threading.active_count() == threads
    finally:
        await db.dispose()


def test_the_command_timeout_is_a_setting() -> None:
    from eventkit.settings import ServiceSettings, default

    assert default("DATABASE_COMMAND_TIMEOUT_SECONDS") > 0
    settings = ServiceSettings(SERVICE_NAME="s", PORT=0, DATABASE_COMMAND_TIMEOUT_SECONDS=2.5)
    assert settings.DATABASE_COMMAND_TIMEOUT_SECONDS == 2.5


async def test_a_released_lead_goes_to_another_replica(database_url: str) -> None:
    """A leader that gives up (its lock's connection broke, or it stops) must leave the lock
    free: on PostgreSQL a pooled connection would go on holding it."""
    one, other = Database(database_url), Database(database_url)
    try:
        first, second = Leadership(one, "relay"), Leadership(other, "relay")
        assert await first.held()
        assert not one.is_postgres or not await second.held()
        await first.release()
        assert await second.held()
        await second.release()
    finally:
        await one.dispose()
        await other.dispose()


@pytest.mark.skipif(not POSTGRES, reason="an advisory lock: PostgreSQL")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_leader_asked_by_several_at_once_keeps_its_lock(database_url: str) -> None:
    """Seen in CI: asked while its relay's poller asked, a leader ran two statements at once
    on the lock's connection, took the failure for a broken connection and let go."""
    db, admin = Database(database_url), Database(database_url)
    holder = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
    try:
        leader = Leadership(db, "relay")
        assert await leader.held()
        async with admin.sessions() as session:
            before = (await session.execute(holder)).scalars().all()
        assert await asyncio.gather(*(leader.held() for _ in range(5))) == [True] * 5
        async with admin.sessions() as session:
            assert (await session.execute(holder)).scalars().all() == before
        assert len(before) == 1
        await leader.release()
    finally:
        await db.dispose()
        await admin.dispose()


@pytest.mark.skipif(not POSTGRES, reason="a server that ends a connection: PostgreSQL")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_pooled_connection_the_server_closed_is_replaced_unseen(database_url: str) -> None:
    """Found by the simulation (seed 400025 on PostgreSQL): a database outage ended every
    connection; long after it was back, a rebuild's first statement on a replica's pooled
    connection failed (`connection is closed`) and the rebuild answered 503."""
    db, admin = Database(database_url), Database(database_url)
    try:
        async with db.engine.connect() as connection:  # back to the pool after this
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        async with admin.engine.connect() as connection:  # as a restart or an outage does
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        async with db.transaction() as session:
            assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()
        await admin.dispose()


class DriverError(Exception):
    """A PostgreSQL driver's error: it carries the server's SQLSTATE, as asyncpg's does."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(error: Exception, kind: type[DBAPIError] = DBAPIError) -> DBAPIError:
    """As SQLAlchemy raises it: the driver's error as `orig` and as the cause."""
    raised = kind("SELECT 1", {}, error)
    raised.__cause__ = error
    return raised


@pytest.mark.parametrize(
    "error",
    [
        # A database closed to connections: a bare DBAPIError (seed 400137 on PostgreSQL).
        wrapped(DriverError('database "x" is not currently accepting connections', "55000")),
        wrapped(DriverError("terminating connection due to administrator command", "57P01")),
        wrapped(DriverError("sorry, too many clients already", "53300")),
        wrapped(ConnectionRefusedError("connection refused"), OperationalError),
        wrapped(sqlite3.OperationalError("database is locked"), OperationalError),
        wrapped(sqlite3.OperationalError("disk I/O error"), OperationalError),
        PoolTimeout("QueuePool limit of size 5 overflow 10 reached"),
        TimeoutError(),  # a statement past the command timeout
    ],
    ids=repr,
)
def test_what_says_the_database_did_not_answer(error: Exception) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(DriverError("division by zero", "22012")),
        wrapped(sqlite3.IntegrityError("UNIQUE constraint failed: t.id"), IntegrityError),
        wrapped(sqlite3.OperationalError("no such table: things"), OperationalError),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_what_says_the_statement_or_the_code_was_wrong(error: Exception) -> None:
    assert not database_unavailable(error)
