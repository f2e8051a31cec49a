"""The simulated broker's Kafka model: what Kafka allows, and nothing more.

One log per topic partition: a key's messages land on one partition, in the order
appended. Each consumer group has its committed offsets and its members; the partitions of
its topics are shared out among the members, and a rebalance moves them (a batch taken
under the old assignment cannot commit, so the new owner reads it again). A batch whose
handler raises, or whose commit is lost, is read again from the committed offset. A
service reads each stream in a group of its own and its retries in one more: retries wait
in one topic per delay, all read by that group (as the transport does), whose fetch takes
from each partition the messages already due, in order, and stops at the first that is
not (the transport pauses the partition until then). A group that joins late starts where
retention left the log.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from eventkit.roster import retry_stream, retry_subscription, stream_subscription

from .broker import Batch, Message, SimBroker

PARTITIONS = 3
# The transport's retry header: the stream a retry goes back to.
STREAM_HEADER = "x-original-topic"

Group = tuple[str, str]  # (group id, topic): where a group has read a topic to


class Model(SimBroker):
    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.logs: dict[str, list[list[Message]]] = {}
        self.committed: dict[Group, list[int]] = {}
        self.members: dict[str, list[str]] = {}  # group id -> its members, in joining order
        self.generation: dict[str, int] = {}
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
        self.committed[(stream_subscription(service, stream), stream)] = offsets
        for partition, log in enumerate(self.logs[stream]):
            self.routed[service] += log[offsets[partition] :]
        for delay in self.retry_delays[service]:
            self._retry_topic(service, delay)

    def _retry_topic(self, service: str, delay: float) -> str:
        topic = retry_stream(service, delay)
        if topic not in self.logs:
            self.logs[topic] = [[] for _ in range(PARTITIONS)]
            self.committed[(retry_subscription(service), topic)] = [0] * PARTITIONS
        return topic

    def _groups_of(self, service: str) -> list[str]:
        streams = [stream for stream, readers in self.readers.items() if service in readers]
        groups = [stream_subscription(service, stream) for stream in streams]
        return [*groups, retry_subscription(service)]

    def _topics_of(self, group: str) -> list[str]:
        return sorted(topic for group_id, topic in self.committed if group_id == group)

    def join(self, replica: str, service: str, stream: str) -> None:
        for group in (stream_subscription(service, stream), retry_subscription(service)):
            members = self.members.setdefault(group, [])
            if replica not in members:
                members.append(replica)
                self.generation[group] = self.generation.get(group, 0) + 1

    def rebalance(self) -> None:
        self.rotation += 1
        for group in self.generation:
            self.generation[group] += 1

    def owner(self, group: str, topic: str, partition: int) -> str | None:
        """The member that holds `partition` of `topic`: the group's partitions, over all its
        topics, dealt out round robin."""
        members = self.members.get(group, [])
        index = self._topics_of(group).index(topic) * PARTITIONS + partition
        return members[(index + self.rotation) % len(members)] if members else None

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
        for (_, topic), offsets in self.committed.items():
            if topic.startswith("retry."):
                partitions = self.logs[topic]
                dues += [m.due for p, log in enumerate(partitions) for m in log[offsets[p] :]]
        later = [due for due in dues if due > self.now()]
        return min(later) if later else None

    def _readable(self, group: str, topic: str, partition: int) -> list[Message]:
        """What the group has yet to read of a partition; of a retry topic, up to its first
        message not due (the transport's consumer pauses the partition there)."""
        log = self.logs[topic][partition][self.committed[(group, topic)][partition] :]
        if not topic.startswith("retry."):
            return log
        now = self.now()
        due = next((i for i, message in enumerate(log) if message.due > now), len(log))
        return log[:due]

    def sources(self, replica: str, service: str) -> list[str]:
        if not self.up:
            return []
        found = []
        for group in self._groups_of(service):
            if (replica, group) in self.in_flight or replica not in self.members.get(group, []):
                continue
            if any(
                self._readable(group, topic, p) and self.owner(group, topic, p) == replica
                for topic in self._topics_of(group)
                for p in range(PARTITIONS)
            ):
                found.append(group)
        return sorted(found)

    def fetch(self, replica: str, service: str, source: str, size: int, order: Any) -> Batch:
        """`source` is a group: a stream's, or the service's retries' (over every delay)."""
        owned = [
            (topic, p)
            for topic in self._topics_of(source)
            for p in range(PARTITIONS)
            if self.owner(source, topic, p) == replica
        ]
        rng: random.Random = order
        rng.shuffle(owned)
        messages: list[Message] = []
        commits = []
        for topic, p in owned:
            taken = self._readable(source, topic, p)[: size - len(messages)]
            if taken:
                messages += taken
                commits.append(((topic, p), self.committed[(source, topic)][p] + len(taken)))
        batch = Batch(replica, service, source, messages, commits, self.generation[source])
        batch.retry = source == retry_subscription(service)
        self.in_flight[(replica, source)] = batch
        return batch

    def _ack(self, batch: Batch) -> None:
        if self.generation[batch.source] != batch.generation:
            return  # the commit fails: the partitions moved on, their new owner reads them again
        for (topic, partition), offset in batch.commits:
            offsets = self.committed[(batch.source, topic)]
            offsets[partition] = max(offsets[partition], offset)

    def _give_back(self, batch: Batch) -> None:
        return None  # nothing committed: the batch is read again from the committed offset

    def backlog(self, service: str) -> int:
        return sum(
            len(self.logs[topic][p]) - offsets[p]
            for (group, topic), offsets in self.committed.items()
            if group in self._groups_of(service)
            for p in range(PARTITIONS)
        )


def partition_of(key: str, serial: int) -> int:
    """The producer's partitioner: by key (a stable hash), round robin without one."""
    return zlib.crc32(key.encode()) % PARTITIONS if key else serial % PARTITIONS
