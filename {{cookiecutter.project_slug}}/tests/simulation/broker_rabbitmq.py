"""The simulated broker's RabbitMQ model: what RabbitMQ allows, and nothing more.

Each consuming service has one FIFO queue per stream, bound to the stream's exchange by
event type (or `#`, until the consumer first starts and binds the types its handlers
take); a publish that no queue takes fails (mandatory). A queue has a single active
consumer: of the replicas subscribed to it, the earliest subscribed takes batches from its
head, the others stand by. A replica that dies subscribes again on its restart, behind
the others, so the next one takes over; a connection blip (`rebalance`) closes every
channel and the active one subscribes again last, so the queue moves on to another
replica where there is one. A batch not acknowledged (its handler raised, its ack was
lost, its replica died, its channel closed) goes back to the head. A retry waits in a
delay queue, then joins the tail of its queue. A queue declared later holds only what was
published after.
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
        # queue -> its consumers' replicas in the order they subscribed; the first is active
        self.consumers: dict[str, list[str]] = {}

    def add_reader(
        self, service: str, stream: str, retry_delays: Any, *, retained: float | None = None
    ) -> None:
        super().add_reader(service, stream, retry_delays, retained=retained)
        queue = f"{service}.{stream}"
        self.queues[queue] = deque()  # declared now: nothing published before is in it
        self.bindings[queue] = (service, stream, None)

    def join(self, replica: str, service: str, stream: str) -> None:
        consumers = self.consumers.setdefault(f"{service}.{stream}", [])
        if replica not in consumers:
            consumers.append(replica)

    def active(self, queue: str) -> str | None:
        """The replica the queue delivers to (x-single-active-consumer)."""
        consumers = self.consumers.get(queue)
        return consumers[0] if consumers else None

    def _resubscribe(self, replica: str) -> None:
        """`replica`'s channels closed and it subscribed again: behind the others."""
        for consumers in self.consumers.values():
            if replica in consumers:
                consumers.remove(replica)
                consumers.append(replica)

    def crash(self, replica: str) -> None:
        super().crash(replica)
        self._resubscribe(replica)

    def bind(self, service: str, stream: str, types: frozenset[str] | None) -> None:
        queue = f"{service}.{stream}"
        if queue in self.bindings:
            self.bindings[queue] = (service, stream, types)

    def rebalance(self) -> None:
        """A connection blip: every channel closes and what it had not acked is requeued at
        once; a batch still being applied cannot be acked on its closed channel. The active
        consumers subscribe again last, so each queue moves to its next replica."""
        for batch in self.in_flight.values():
            if batch.generation != CLOSED:
                batch.generation = CLOSED
                self.queues[batch.source].extendleft(reversed(batch.messages))
        for consumers in self.consumers.values():
            if consumers:
                consumers.append(consumers.pop(0))

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
            and self.active(queue) == replica
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
