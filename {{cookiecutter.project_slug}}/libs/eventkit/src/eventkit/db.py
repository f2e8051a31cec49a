"""Each service's own database: SQLAlchemy 2 async, SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiosqlite
from sqlalchemy import DateTime, Table, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from eventkit.settings import default

# Names of driver errors that mean the server went away (asyncpg's, without importing it).
LOST_SERVER = {
    "PostgresConnectionError",
    "ConnectionDoesNotExistError",
    "CannotConnectNowError",
    "TooManyConnectionsError",
    "AdminShutdownError",
    "CrashShutdownError",
    "QueryCanceledError",
}
# SQLSTATE classes that say the same in any PostgreSQL driver: a connection exception, too
# few resources (too many connections), an operator's intervention (shutting down,
# starting up, a statement cancelled at the timeout), a system error (I/O).
UNAVAILABLE_SQLSTATES = ("08", "53", "57", "58")
# What is said in words only: SQLite's busy timeout ran out, its file is gone, its disk
# fails; a PostgreSQL database closed to connections (SQLSTATE 55000, a broad class).
UNAVAILABLE_MESSAGES = (
    "database is locked",
    "unable to open database",
    "disk i/o error",
    "is not currently accepting connections",
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc`, or what caused it, says the database did not answer (down, restarting,
    refusing connections, its pool exhausted, a statement past the command timeout) rather
    than that the statement was wrong.

    The one classification of it: the consumer waits and has the batch delivered again
    instead of spending a retry, and an HTTP route answers 503 with Retry-After instead of
    500. (Two lists of it drifted apart: a database closed to connections raises a bare
    DBAPIError, which the routes answered with 500.)
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError | PoolTimeout):  # refused, reset, timed out
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if LOST_SERVER & {cls.__name__ for cls in type(error).__mro__}:
            return True
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
            return True
        message = str(error).lower()
        if any(words in message for words in UNAVAILABLE_MESSAGES):
            return True
        orig = getattr(error, "orig", None)
        pending += [
            error.__cause__,
            error.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]
    return False


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps always come back timezone-aware in UTC, also from SQLite, which drops the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Shared by eventkit's tables (outbox, inbox, dead letters) and each service's own."""

    type_annotation_map = {datetime: UTCDateTime}  # noqa: RUF012


def table_of(model: type[Base]) -> Table:
    """The table of `model`, for statements on a path run for every event or round: on the
    table they skip the ORM's layers (bulk insert, unit of work), which cost more than the
    statement itself."""
    return cast(Table, model.__table__)


class Database:
    def __init__(
        self, url: str, command_timeout: float = default("DATABASE_COMMAND_TIMEOUT_SECONDS")
    ) -> None:
        """`command_timeout`: the longest a statement may wait or run before it fails (a
        lock held elsewhere, a server that stops answering), so nothing waits for ever."""
        self.url = make_url(url)
        connect_args: dict[str, object] = {}
        sqlite = self.url.get_backend_name() == "sqlite"
        if sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = command_timeout  # how long it waits for a lock
        elif self.url.get_dialect().driver == "asyncpg":
            connect_args["command_timeout"] = command_timeout
        # hide_parameters: errors and logs never show the values (emails, names) of a statement.
        # pool_pre_ping: a pooled connection that a server restart or an outage closed is
        # replaced as it is checked out, so the first use after the server is back does not
        # fail (a rebuild asked for then answered 503). SQLite's file has nothing to close.
        self.engine: AsyncEngine = create_async_engine(
            self.url,
            connect_args=connect_args,
            hide_parameters=True,
            pool_pre_ping=not sqlite,
        )
        if sqlite:
            event.listen(self.engine.sync_engine, "do_connect", _sqlite_on_the_loop)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_all(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    @property
    def is_postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    async def dispose(self) -> None:
        await self.engine.dispose()


def lock_key(name: str) -> int:
    """A stable 64-bit key for a PostgreSQL advisory lock named `name`."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    """Which process of a service does a one-at-a-time job (e.g. the outbox relay).

    On PostgreSQL: the one holding a session advisory lock, on a connection of its own;
    if the process dies, its connection closes and another replica takes over. SQLite is
    one process's file: that process leads.
    """

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.key = lock_key(name)
        self._connection: AsyncConnection | None = None
        # One caller at a time on the lock's connection: a second statement while one is in
        # flight fails, and that failure would read as a lost lead (seen in CI: a test asked
        # while the relay's poller asked, and neither replica led).
        self._turn = asyncio.Lock()

    async def held(self) -> bool:
        """Whether this process leads now; takes the lead when it is free."""
        if not self.db.is_postgres:
            return True
        async with self._turn:
            return await self._held()

    async def _held(self) -> bool:
        if self._connection is not None:
            try:
                await self._connection.execute(text("SELECT 1"))
                await self._connection.commit()
                return True
            except Exception:  # the connection broke, and the lock went with it
                await self._release()
        connection = await self.db.engine.connect()
        try:
            got = await connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
            await connection.commit()
        except Exception:
            await connection.close()
            raise
        if got:
            self._connection = connection
            return True
        await connection.close()
        return False

    async def release(self) -> None:
        """Give up the lead. The lock's connection is closed, not handed back to the pool: a
        pooled session would go on holding the lock, and no replica could take the lead."""
        async with self._turn:
            await self._release()

    async def _release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the HTTP handlers read while a subscriber writes.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class SQLiteOnTheLoop(aiosqlite.Connection):
    """aiosqlite's connection, each call run where it is made rather than in a worker thread.

    A statement on a local SQLite file takes microseconds; the hop to aiosqlite's thread and
    back (two thread switches and a wake-up of the event loop, several per statement) cost
    more: a sixth of the stack's CPU per sign-up, and most of its request p99, at 50/s.

    What it costs instead: a statement that waits for SQLite's file waits on the event loop.
    With WAL, readers never wait for the writer, and a transaction here awaits nothing but
    its own statements, so a write waits only while another process writes (a replica, a
    tool), at most SQLite's busy timeout. A transaction that awaited anything else after it
    wrote would hold the file meanwhile and stall the process's next writer: handlers and
    routes do their I/O outside the transaction (a worker does it after the commit).
    """

    def __await__(self) -> Generator[Any, None, SQLiteOnTheLoop]:
        return self._open().__await__()

    async def _open(self) -> SQLiteOnTheLoop:
        if self._connection is None:
            self._connection = self._connector()
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _sqlite_on_the_loop(dialect, conn_rec, cargs, cparams) -> None:  # type: ignore[no-untyped-def]
    """Have SQLAlchemy's aiosqlite dialect open a SQLiteOnTheLoop, with the URL's arguments."""
    cparams["async_creator_fn"] = _open_on_the_loop


def _open_on_the_loop(
    database: str, *, iter_chunk_size: int = 64, **kwargs: Any
) -> SQLiteOnTheLoop:
    connector: Callable[[], sqlite3.Connection] = partial(sqlite3.connect, database, **kwargs)
    return SQLiteOnTheLoop(connector, iter_chunk_size)
