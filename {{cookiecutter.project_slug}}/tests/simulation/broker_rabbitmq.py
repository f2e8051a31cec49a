"""The simulated broker's RabbitMQ model: what RabbitMQ allows, and nothing more.

Each consuming service has one FIFO queue per stream, bound to the stream's exchange by
event type (or `#`, until the consumer first starts and binds the types its handlers
take); a publish that no queue takes fails (mandatory). Replicas compete for a queue,
each taking batches from its head; a batch not acknowledged (its handler raised, its ack
was lost, its replica died) goes back to the head. A retry waits in a delay queue, then
joins the tail of its queue. A queue declared later holds only what was published after.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .broker import Batch, Message, SimBroker

RETRY_QUEUE_HEADER = "retry-queue"
CLOSED = -1  # a batch's generation once its channel closed under it


class Model(SimBroker):
    keys_stop_at_failure = True  # the transport publishes a key's messages in a chain

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.queues: dict[str, deque[Message]] = {}
        # queue -> (service, stream, the types it is bound to; None: `#`)
        self.bindings: dict[str, tuple[str, str, frozenset[str] | None]] = {}
        self.delayed: list[tuple[str, Message]] = []  # (queue it goes back to, message)

    def add_reader(
        self, service: str, stream: str, retry_delays: Any, *, retained: float | None = None
    ) -> None:
        super().add_reader(service, stream, retry_delays, retained=retained)
        queue = f"{service}.{stream}"
        self.queues[queue] = deque()  # declared now: nothing published before is in it
        self.bindings[queue] = (service, stream, None)

    def join(self, replica: str, service: str, stream: str) -> None:
        return None  # replicas compete for the queue's head

    def bind(self, service: str, stream: str, types: frozenset[str] | None) -> None:
        queue = f"{service}.{stream}"
        if queue in self.bindings:
            self.bindings[queue] = (service, stream, types)

    def rebalance(self) -> None:
        """A connection blip: every channel closes and what it had not acked is requeued at
        once; a batch still being applied cannot be acked on its closed channel."""
        for batch in self.in_flight.values():
            if batch.generation != CLOSED:
                batch.generation = CLOSED
                self.queues[batch.source].extendleft(reversed(batch.messages))

    def _route(self, message: Message) -> list[str]:
        reached = []
        for queue, (service, stream, types) in self.bindings.items():
            if stream == message.stream and (types is None or message.event_type in types):
                self.queues[queue].append(message)
                reached.append(service)
        if not reached:
            raise ConnectionError(f"NO_ROUTE: no queue takes {message.event_type}")
        return reached

    def _hold_retry(self, service: str, message: Message, delay: float) -> None:
        queue = f"{service}.{message.stream}"
        message.headers.update({"aggregate-id": message.key, RETRY_QUEUE_HEADER: queue})
        self.delayed.append((queue, message))

    def tick(self) -> None:
        due = [(q, m) for q, m in self.delayed if m.due <= self.now()]
        if not due:
            return
        self.delayed = [(q, m) for q, m in self.delayed if m.due > self.now()]
        for queue, message in sorted(due, key=lambda item: (item[1].due, item[1].serial)):
            self.queues[queue].append(message)

    def next_due(self) -> float | None:
        dues = [m.due for _, m in self.delayed] + [b.not_before for b in self.in_flight.values()]
        later = [due for due in dues if due > self.now()]
        return min(later) if later else None

    def sources(self, replica: str, service: str) -> list[str]:
        if not self.up:
            return []
        return sorted(
            queue
            for queue, (owner, stream, _) in self.bindings.items()
            if owner == service
            and self.queues[queue]
            and (replica, queue) not in self.in_flight
            and (replica, stream) in self.subscribers
        )

    def fetch(self, replica: str, service: str, source: str, size: int, order: Any) -> Batch:
        queue = self.queues[source]
        messages = [queue.popleft() for _ in range(min(size, len(queue)))]
        batch = Batch(replica, service, source, messages)
        self.in_flight[(replica, source)] = batch
        return batch

    def _ack(self, batch: Batch) -> None:
        return None  # taken off the queue when fetched (or requeued when its channel closed)

    def _give_back(self, batch: Batch) -> None:
        if batch.generation != CLOSED:  # else requeued already
            self.queues[batch.source].extendleft(reversed(batch.messages))

    def backlog(self, service: str) -> int:
        queued = sum(len(q) for name, q in self.queues.items() if self.bindings[name][0] == service)
        waiting = sum(1 for queue, _ in self.delayed if self.bindings[queue][0] == service)
        held = sum(len(b.messages) for b in self.in_flight.values() if b.service == service)
        return queued + waiting + held
