"""The simulated broker's Kafka model: what Kafka allows, and nothing more.

One log per topic partition: a key's messages land on one partition, in the order
appended. Each consumer group has its committed offsets and its members; the partitions
are shared out among the members, and a rebalance moves them (a batch taken under the old
assignment cannot commit, so the new owner reads it again). A batch whose handler raises,
or whose commit is lost, is read again from the committed offset. Retries wait in retry
topics of their own, one per delay, each read by a group of its own (as the transport
does); a batch of them is applied once its last message is due. A group that joins late
starts where retention left the log.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from eventkit.roster import retry_stream

from .broker import Batch, Message, SimBroker

PARTITIONS = 3
# The transport's retry header: the stream a retry goes back to.
STREAM_HEADER = "x-original-topic"

Group = tuple[str, str]  # (group id, topic): a stream's group is its service's name


class Model(SimBroker):
    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.logs: dict[str, list[list[Message]]] = {}
        self.committed: dict[Group, list[int]] = {}
        self.members: dict[Group, list[str]] = {}
        self.generation: dict[Group, int] = {}
        self.rotation = 0

    def declare_stream(self, stream: str, publisher: str) -> None:
        super().declare_stream(stream, publisher)
        self.logs.setdefault(stream, [[] for _ in range(PARTITIONS)])

    def add_reader(
        self, service: str, stream: str, retry_delays: Any, *, retained: float | None = None
    ) -> None:
        super().add_reader(service, stream, retry_delays, retained=retained)
        offsets = [0] * PARTITIONS
        if retained is not None:  # a new group starts where retention left each partition
            offsets = [round(len(log) * (1 - retained)) for log in self.logs[stream]]
        self.committed[(service, stream)] = offsets
        for partition, log in enumerate(self.logs[stream]):
            self.routed[service] += log[offsets[partition] :]
        for delay in self.retry_delays[service]:
            self._retry_topic(service, delay)

    def _retry_topic(self, service: str, delay: float) -> str:
        topic = retry_stream(service, delay)
        if topic not in self.logs:
            self.logs[topic] = [[] for _ in range(PARTITIONS)]
            self.committed[(topic, topic)] = [0] * PARTITIONS
            replicas = {s.replica for s in self.subscribers.values() if s.service == service}
            self.members[(topic, topic)] = sorted(replicas)
            self.generation[(topic, topic)] = 1
        return topic

    def _groups_of(self, service: str) -> list[Group]:
        return [
            group
            for group in self.committed
            if group[0] == service or group[1].startswith(f"retry.{service}.")
        ]

    def join(self, replica: str, service: str, stream: str) -> None:
        topics = [t for t in self.logs if t.startswith(f"retry.{service}.")]
        for group in [(service, stream)] + [(topic, topic) for topic in topics]:
            members = self.members.setdefault(group, [])
            if replica not in members:
                members.append(replica)
                self.generation[group] = self.generation.get(group, 0) + 1

    def rebalance(self) -> None:
        self.rotation += 1
        for group in self.generation:
            self.generation[group] += 1

    def owner(self, group: Group, partition: int) -> str | None:
        members = self.members.get(group, [])
        return members[(partition + self.rotation) % len(members)] if members else None

    def _route(self, message: Message) -> list[str]:
        log = self.logs.setdefault(message.stream, [[] for _ in range(PARTITIONS)])
        log[partition_of(message.key, message.serial)].append(message)
        return list(self.readers.get(message.stream, []))

    def _hold_retry(self, service: str, message: Message, delay: float) -> None:
        message.headers[STREAM_HEADER] = message.stream
        topic = self._retry_topic(service, delay)
        self.logs[topic][partition_of(message.key, message.serial)].append(message)

    def next_due(self) -> float | None:
        dues = [b.not_before for b in self.in_flight.values()]
        for (group, topic), offsets in self.committed.items():
            if group == topic:  # a retry topic
                partitions = self.logs[topic]
                dues += [m.due for p, log in enumerate(partitions) for m in log[offsets[p] :]]
        later = [due for due in dues if due > self.now()]
        return min(later) if later else None

    def sources(self, replica: str, service: str) -> list[str]:
        if not self.up:
            return []
        found = []
        for group in self._groups_of(service):
            topic = group[1]
            if (replica, topic) in self.in_flight or replica not in self.members.get(group, []):
                continue
            log, offsets = self.logs[topic], self.committed[group]
            if any(
                len(log[p]) > offsets[p] and self.owner(group, p) == replica
                for p in range(PARTITIONS)
            ):
                found.append(topic)
        return sorted(found)

    def fetch(self, replica: str, service: str, source: str, size: int, order: Any) -> Batch:
        retry = source.startswith("retry.")
        group = (source, source) if retry else (service, source)
        offsets = self.committed[group]
        owned = [p for p in range(PARTITIONS) if self.owner(group, p) == replica]
        rng: random.Random = order
        rng.shuffle(owned)
        messages: list[Message] = []
        commits = []
        for p in owned:
            taken = self.logs[source][p][offsets[p] : offsets[p] + size - len(messages)]
            if taken:
                messages += taken
                commits.append((p, offsets[p] + len(taken)))
        batch = Batch(replica, service, source, messages, commits, self.generation[group])
        if retry:
            batch.retry = True
            batch.not_before = max(m.due for m in messages)  # the transport sleeps till then
        self.in_flight[(replica, source)] = batch
        return batch

    def _ack(self, batch: Batch) -> None:
        group = (batch.source, batch.source) if batch.retry else (batch.service, batch.source)
        if self.generation[group] != batch.generation:
            return  # the commit fails: the partitions moved on, their new owner reads them again
        offsets = self.committed[group]
        for partition, offset in batch.commits:
            offsets[partition] = max(offsets[partition], offset)

    def _give_back(self, batch: Batch) -> None:
        return None  # nothing committed: the batch is read again from the committed offset

    def backlog(self, service: str) -> int:
        return sum(
            len(self.logs[topic][p]) - offsets[p]
            for (group, topic), offsets in self.committed.items()
            if (group, topic) in self._groups_of(service)
            for p in range(PARTITIONS)
        )


def partition_of(key: str, serial: int) -> int:
    """The producer's partitioner: by key (a stable hash), round robin without one."""
    return zlib.crc32(key.encode()) % PARTITIONS if key else serial % PARTITIONS
