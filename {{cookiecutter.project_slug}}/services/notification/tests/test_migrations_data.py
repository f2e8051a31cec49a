"""Notification's migrations carry the data of a database that was already in use."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import DateTime, bindparam, text

import notification_service
from eventkit.db import Database
from eventkit.migrations import config, upgrade_async

MIGRATIONS = Path(notification_service.__file__).parent / "migrations"


async def test_each_notifications_sent_at_becomes_its_delivery_state(database_url: str) -> None:
    await asyncio.to_thread(command.upgrade, config(database_url, MIGRATIONS), "notification_0001")
    db = Database(database_url)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for n, sent_at in enumerate([now, None]):
            await session.execute(
                text(
                    "INSERT INTO notifications (id, user_id, kind, channel, recipient, subject,"
                    " event_id, created_at, sent_at) VALUES (:id, 'u', 'welcome', 'email',"
                    " 'a@example.com', 'Welcome', :event_id, :created_at, :sent_at)"
                ).bindparams(
                    bindparam("created_at", type_=DateTime(timezone=True)),
                    bindparam("sent_at", type_=DateTime(timezone=True)),
                ),
                {"id": f"n{n}", "event_id": f"e{n}", "created_at": now, "sent_at": sent_at},
            )
    await upgrade_async(database_url, MIGRATIONS)
    async with db.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT event_id, state, sent_at IS NOT NULL FROM deliveries ORDER BY event_id"
                )
            )
        ).all()
    await db.dispose()
    assert [tuple(row) for row in rows] == [("e0", "sent", True), ("e1", "waiting", False)]
