"""Sending the emails that committed notifications call for, each marked as it leaves.

A handler records a notification and its delivery (`waiting`) in the transaction that
applies its event; only after that commits does this dispatcher send the email. Each email
is taken, sent and marked `sent` in a transaction of its own, so a failed commit, a retry
or a duplicate delivery sends nothing twice, and a crash between sending and marking sends
that one email again: delivery is at-least-once. With replicas on PostgreSQL the row is
locked while it is sent (`FOR UPDATE SKIP LOCKED`), so one replica sends it.

A refused email (sender.Refused: a 5xx for its recipient or content) is marked `failed`
with the reason and the next one goes; any other error (SMTP down, a timeout, a 4xx)
leaves it `waiting`, and the dispatcher tries again after `poll_seconds`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter
from sqlalchemy import bindparam, select, update

from eventkit.db import Database, table_of
from eventkit.kit import ServiceKit
from eventkit.poller import Poller
from notification_service.models import FAILED, SENT, WAITING, Delivery
from notification_service.sender import Message, Refused, Sender

log = logging.getLogger(__name__)

EMAILS = Counter(
    "notification_emails_total",
    "Emails handed to the mail server (sent), or refused by it for good (refused)",
    ["outcome"],
)


# Run for every email, so built once, on the table's columns (no ORM object to track).
_DELIVERIES = table_of(Delivery)
_OLDEST_WAITING = (
    select(_DELIVERIES.c.event_id, _DELIVERIES.c.recipient, _DELIVERIES.c.subject)
    .where(_DELIVERIES.c.state == WAITING)
    .order_by(_DELIVERIES.c.created_at, _DELIVERIES.c.event_id)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_TAKEN = _DELIVERIES.c.event_id == bindparam("taken")
_MARK_SENT = update(_DELIVERIES).where(_TAKEN).values(state=SENT, sent_at=bindparam("at"))
_MARK_REFUSED = update(_DELIVERIES).where(_TAKEN).values(state=FAILED, failure=bindparam("why"))


@dataclass(frozen=True)
class Channel:
    """Where the notifications a handler records go out (`name`), and how the dispatcher
    hears, once their transaction commits, that there is mail."""

    name: str
    wake: Callable[[], None] = field(default=lambda: None)


class EmailDispatcher:
    """The service's worker (eventkit.kit.Worker): woken by each commit that recorded mail."""

    def __init__(self, sender: Sender, poll_seconds: float = 1.0, batch: int = 100) -> None:
        self.sender = sender
        self.batch = batch
        self.db: Database | None = None
        self.poller = Poller("email-dispatcher", self._send_all, poll_seconds)

    def channel(self) -> Channel:
        return Channel(self.sender.channel, wake=self.poller.wake)

    def start(self, kit: ServiceKit) -> None:
        self.db = kit.db
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()

    async def _send_all(self) -> None:
        # A round short of `batch` found no more mail: a wake, not another query, starts
        # the next (each commit that records mail wakes the dispatcher).
        while not self.poller.stopping and await self.send_pending() == self.batch:
            pass

    async def send_pending(self) -> int:
        """Send up to `batch` waiting emails, oldest first; returns how many were settled
        (sent or refused). An error other than a refusal stops the round and is raised."""
        settled = 0
        while settled < self.batch and await self.send_one():
            settled += 1
        return settled

    async def send_one(self) -> bool:
        """Send the oldest waiting email no other replica holds, and mark it; False if none."""
        assert self.db is not None, "start() first"
        outcome = "sent"
        async with self.db.transaction() as session:
            delivery = (await session.execute(_OLDEST_WAITING)).first()
            if delivery is None:
                return False
            event_id, recipient, subject = delivery
            try:
                await self.sender.send(Message(to=recipient, subject=subject, body=subject))
            except Refused as exc:
                outcome = "refused"
                why = str(exc)[:2000]
                await session.execute(_MARK_REFUSED, {"taken": event_id, "why": why})
                # The reason may name the address: it is on /notifications, not in the log.
                log.warning("the email for event %s was refused for good", event_id)
            else:
                await session.execute(_MARK_SENT, {"taken": event_id, "at": datetime.now(UTC)})
        EMAILS.labels(outcome=outcome).inc()
        return True
