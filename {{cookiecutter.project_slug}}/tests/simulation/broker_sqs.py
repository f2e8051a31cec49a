"""The simulated broker's SNS + SQS model: what SNS FIFO topics and SQS FIFO queues allow,
and nothing more.

A stream is an SNS FIFO topic. Each consuming service has one FIFO queue per stream,
subscribed to the topic: a publisher's start subscribes the queues of its roster's readers
(taking every type), and the consumer's first start sets a filter policy of the types its
handlers take. A queue subscribed later (a service added later) holds only what was
published after: SNS drops what no subscription takes, and a publish that reaches no queue
still succeeds. The topic drops a publish whose deduplication id it took in the last 5
minutes, and answers it as taken; the adapter gives each publish an id of its own
(`deduplication_id`: under the event id, seed 572377254 lost a resend a rebuild needed).

A message's group is its key. A receive takes, from the groups none of whose messages is
in flight, a prefix of each group's messages (groups in any order); a group with a message
in flight gives no more until it is deleted or visible again, but its other groups go on,
to any replica (no single active consumer): each replica polls each of its service's queues
and has one batch of each in flight at a time, as the adapter does. A batch is deleted once
its handler returns. A handler that raises hands it back: visible again after the adapter's
hand-back delay, in order. A lost delete or a dead replica leaves it in flight until its
visibility timeout runs out. A delete or hand-back takes only with the latest receipt
handle: a `rebalance` is a lapse of visibility (the renewals did not reach SQS), and every
batch in flight is visible again at once; once another receive has taken it, the old
batch's delete deletes nothing. While SQS does not answer, a delete fails as a lost one.

Retries go to the service's one FIFO retry queue, a group per stream, key and delay: a
group's first message is received once it is due (the adapter's poller keeps one not yet
due hidden until it is), and its later ones wait behind it; a key's retries of other
delays do not. What the consumer gives up on goes to the service's dead-letter queue.

Not modelled: SQS's own redrive to the dead letters after DELIVERY_LIMIT receives (here a
consumer without its database hands a batch back at once, where the real one holds it for
`batch_hold_seconds`, so the receive counts are not the real ones); a filter policy's
propagation (AWS may deliver by the old policy for some minutes, which here only ever took
every type, and the consumer passes over types it does not take).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventkit.roster import stream_subscription
from eventkit.transports.sqs import (
    KEY_ATTRIBUTE,
    STREAM_ATTRIBUTE,
    deduplication_id,
    group_id,
    retry_queue_name,
    sqs_name,
)

from .broker import Batch, Crash, Message, SimBroker

DEDUPLICATION_SECONDS = 300.0  # SNS and SQS FIFO: the deduplication interval
VISIBILITY_TIMEOUT_SECONDS = 30.0  # SQS_VISIBILITY_TIMEOUT_SECONDS' default
HANDBACK_SECONDS = 1.0  # SQS_HANDBACK_SECONDS' default
IN_FLIGHT = math.inf  # hidden while its batch's handler runs (the adapter renews it)


def retry_group(stream: str, key: str, delay: float) -> str:
    """A retry's MessageGroupId, as the adapter's `publish_retry` sets it: one group per
    stream, key and delay."""
    return group_id(f"{stream}/{key}/{delay:g}")


@dataclass(eq=False)
class Entry:
    """A message in a queue, until a delete takes it out."""

    message: Message
    group: str
    hidden_until: float = 0.0  # invisible (in flight, handed back) until then
    receipt: int = 0  # the receive whose receipt handle is the latest
    deleted: bool = False


@dataclass
class Queue:
    name: str
    service: str
    stream: str | None  # None: the service's retry queue
    entries: list[Entry] = field(default_factory=list)
    types: frozenset[str] | None = None  # the subscription's filter policy; None: every type

    def groups(self) -> dict[str, list[Entry]]:
        """Each message group's messages, in order."""
        found: dict[str, list[Entry]] = {}
        for entry in self.entries:
            found.setdefault(entry.group, []).append(entry)
        return found


class Model(SimBroker):
    keys_stop_at_failure = True  # the adapter sends no more of a key once one failed

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.queues: dict[str, Queue] = {}
        self.taken: dict[tuple[str, str], float] = {}  # (stream, deduplication id) -> when
        self.receives = 0  # receipt handles handed out so far
        self.held: dict[Batch, list[Entry]] = {}  # a batch in flight -> its entries

    # --- topology -------------------------------------------------------------------

    def add_reader(
        self,
        service: str,
        stream: str,
        retry_delays: Sequence[float],
        *,
        retained: float | None = None,
    ) -> None:
        super().add_reader(service, stream, retry_delays, retained=retained)
        name = sqs_name(stream_subscription(service, stream))
        # subscribed now: nothing published before is in it (SNS kept none of it)
        self.queues.setdefault(name, Queue(name, service, stream))
        self._retry_queue(service)

    def _retry_queue(self, service: str) -> Queue:
        name = retry_queue_name(service)
        return self.queues.setdefault(name, Queue(name, service, None))

    def join(self, replica: str, service: str, stream: str) -> None:
        return None  # every replica polls every queue of its service

    def bind(self, service: str, stream: str, types: frozenset[str] | None) -> None:
        queue = self.queues.get(sqs_name(stream_subscription(service, stream)))
        if queue is not None:
            queue.types = types

    def rebalance(self) -> None:
        """A lapse of visibility: every batch in flight is visible again at once, in order;
        its replica still applies it, and its delete takes only if no receive came between."""
        for entries in self.held.values():
            for entry in entries:
                if entry.receipt and not entry.deleted and entry.hidden_until > self.now():
                    entry.hidden_until = self.now()

    # --- publishing -----------------------------------------------------------------

    def _route(self, message: Message) -> list[str]:
        taken = (message.stream, deduplication_id())
        if self.now() - self.taken.get(taken, -math.inf) < DEDUPLICATION_SECONDS:
            return []  # a duplicate: SNS answers it as published and delivers it nowhere
        self.taken[taken] = self.now()
        message.headers[STREAM_ATTRIBUTE] = message.stream
        reached = []
        for queue in self.queues.values():
            if queue.stream == message.stream and (
                queue.types is None or message.event_type in queue.types
            ):
                queue.entries.append(Entry(message, group_id(message.key)))
                reached.append(queue.service)
        return reached

    def _hold_retry(self, service: str, message: Message, delay: float) -> None:
        message.headers.update({KEY_ATTRIBUTE: message.key, STREAM_ATTRIBUTE: message.stream})
        entry = Entry(message, retry_group(message.stream, message.key, delay))
        self._retry_queue(service).entries.append(entry)

    # --- delivering -----------------------------------------------------------------

    def _receivable(self, queue: Queue) -> list[list[Entry]]:
        """Per group a receive could take from now: its messages that are due, in order, up
        to the first that is not (none of a group with a message in flight)."""
        now = self.now()
        found = []
        for entries in queue.groups().values():
            if any(e.hidden_until > now for e in entries):
                continue
            due = []
            for entry in entries:
                if entry.message.due > now:
                    break
                due.append(entry)
            if due:
                found.append(due)
        return found

    def next_due(self) -> float | None:
        dues = [b.not_before for b in self.in_flight.values()]
        for queue in self.queues.values():
            for entries in queue.groups().values():
                hidden = max(e.hidden_until for e in entries)
                if hidden != IN_FLIGHT:  # else it waits for its batch
                    dues.append(max(hidden, entries[0].message.due))
        later = [due for due in dues if due > self.now()]
        return min(later) if later else None

    def sources(self, replica: str, service: str) -> list[str]:
        if not self.up:
            return []
        reads = {stream for (r, stream) in self.subscribers if r == replica}
        return sorted(
            queue.name
            for queue in self.queues.values()
            if queue.service == service
            and (queue.stream in reads if queue.stream is not None else bool(reads))
            and (replica, queue.name) not in self.in_flight
            and self._receivable(queue)
        )

    def fetch(self, replica: str, service: str, source: str, size: int, order: Any) -> Batch:
        queue = self.queues[source]
        groups = self._receivable(queue)
        order.shuffle(groups)
        self.receives += 1
        taken: list[Entry] = []
        for entries in groups:
            room = size - len(taken)
            if room <= 0:
                break
            count = min(room, len(entries))
            if order.random() < 0.25:  # SQS may hand out less of a group than it has
                count = order.randint(1, count)
            for entry in entries[:count]:
                entry.hidden_until = IN_FLIGHT
                entry.receipt = self.receives
                taken.append(entry)
        batch = Batch(replica, service, source, [e.message for e in taken])
        batch.generation = self.receives
        batch.retry = queue.stream is None
        self.in_flight[(replica, source)] = batch
        self.held[batch] = taken
        return batch

    async def process(self, batch: Batch, *, ack_lost: bool = False) -> None:
        """As SimBroker's, but a replica that dies mid-batch hands nothing back: its batch
        stays in flight until its visibility timeout runs out."""
        del self.in_flight[(batch.replica, batch.source)]
        try:
            await self._deliver(batch)
        except Crash:
            self._release(batch, VISIBILITY_TIMEOUT_SECONDS)
            raise
        except BaseException:
            self._give_back(batch)
            raise
        if ack_lost:
            self._release(batch, VISIBILITY_TIMEOUT_SECONDS)
        else:
            self._ack(batch)

    def crash(self, replica: str) -> None:
        for key in [k for k in self.in_flight if k[0] == replica]:
            self._release(self.in_flight.pop(key), VISIBILITY_TIMEOUT_SECONDS)

    def _release(self, batch: Batch, seconds: float) -> None:
        """`batch`'s messages are visible again in `seconds` (where it still holds them)."""
        for entry in self.held.pop(batch, []):
            if entry.receipt == batch.generation and not entry.deleted:
                entry.hidden_until = self.now() + seconds

    def _ack(self, batch: Batch) -> None:
        if not self.up:  # the delete fails: back when the visibility timeout runs out
            self._release(batch, VISIBILITY_TIMEOUT_SECONDS)
            return
        for entry in self.held.pop(batch, []):
            if entry.receipt == batch.generation and not entry.deleted:
                entry.deleted = True
                self.queues[batch.source].entries.remove(entry)

    def _give_back(self, batch: Batch) -> None:
        """The handler raised: hidden for the hand-back delay, then visible at once (if SQS
        does not answer, the visibility timeout runs out instead)."""
        self._release(batch, HANDBACK_SECONDS if self.up else VISIBILITY_TIMEOUT_SECONDS)

    def backlog(self, service: str) -> int:
        """Messages in the service's queues (in flight or not, retries due or not), and those
        of its batches in flight that another receive has deleted meanwhile."""
        pending = {
            id(entry.message)
            for queue in self.queues.values()
            if queue.service == service
            for entry in queue.entries
        }
        pending |= {
            id(m) for b in self.in_flight.values() if b.service == service for m in b.messages
        }
        return len(pending)
