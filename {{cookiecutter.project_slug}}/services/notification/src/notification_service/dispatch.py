"""Sending the emails that committed notifications call for, once each.

A handler records a notification (with `sent_at` unset) in the transaction that applies
its event; only after that commits does this dispatcher send the email and mark the row
sent. A failed commit, a retry or a duplicate delivery therefore sends nothing twice;
while SMTP is down the rows wait and are sent when it is back. With replicas on
PostgreSQL each row is locked while it is sent (`FOR UPDATE SKIP LOCKED`), so one replica
sends it. A crash between sending and marking can send one email again: at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from eventkit.db import Database
from notification_service.models import Notification
from notification_service.sender import Message, Sender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """How the notifications a handler records leave: by `channel`, after their commit.

    A rebuild replays history with `replay=True`: its rows are recorded as already sent.
    """

    channel: str
    wake: Callable[[], None] = field(default=lambda: None)
    replay: bool = False


class EmailDispatcher:
    def __init__(self, sender: Sender, poll_seconds: float = 1.0, batch: int = 100) -> None:
        self.sender = sender
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.db: Database | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def delivery(self) -> Delivery:
        return Delivery(self.sender.channel, wake=self._wake.set)

    def start(self, kit: Any) -> None:
        self.db = kit.db
        self._task = asyncio.create_task(self._run(), name="email-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                while await self.send_pending():
                    pass
            except Exception:  # SMTP or the database down: the rows wait
                log.warning("could not send pending emails; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def send_pending(self) -> int:
        """Send one batch of unsent notifications; returns how many were sent.

        The batch's rows are claimed (locked) in one transaction and marked sent with one
        UPDATE when its emails have left; if SMTP fails midway, those already sent are
        still marked, and the rest wait for the next round.
        """
        assert self.db is not None, "start() first"
        failure: Exception | None = None
        sent: list[str] = []
        async with self.db.transaction() as session:
            rows = await session.scalars(
                select(Notification)
                .where(Notification.sent_at.is_(None))
                .order_by(Notification.created_at)
                .limit(self.batch)
                .with_for_update(skip_locked=True)
            )
            for row in rows:
                try:
                    await self.sender.send(
                        Message(to=row.recipient, subject=row.subject, body=row.subject)
                    )
                except Exception as exc:
                    failure = exc
                    break
                sent.append(row.id)
            if sent:
                await session.execute(
                    update(Notification)
                    .where(Notification.id.in_(sent))
                    .values(sent_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False)
                )
        if failure is not None:
            raise failure
        return len(sent)
