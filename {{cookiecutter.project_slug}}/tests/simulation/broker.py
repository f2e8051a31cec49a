"""A broker inside the simulation's process, whose every delivery the scheduler decides.

It stands in for the project's broker behind eventkit's `Transport` protocol. What the
real broker allows, and nothing more, is its model's: `broker_<broker>.py` beside this
file (`model()` loads it). Either way a message reaches a service's handler only when the
scheduler fetches a batch (`fetch`) and later applies it (`process`), so deliveries
interleave as the seed says: late, duplicated (a lost ack, a crash before the ack, a
rebalance) and, where the broker allows it, out of order. Publishes go through
`SimTransport`, one per service replica, where the faults of the publishing side strike (a
crash mid-batch, a lost confirm).
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventkit.consumer import ATTEMPTS_HEADER
from eventkit.roster import dead_letter_stream
from eventkit.settings import shipped_broker
from eventkit.transports import (
    BatchHandler,
    Delivery,
    DeliveryConfig,
    EventTypes,
    Outcome,
    Outgoing,
    TransportConfig,
)

# Digits that str.isdigit() takes and int() does not: a mangled attempts header.
SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class Crash(BaseException):
    """The process dies here: nothing after this point of the step happens (no ack, no mark).

    A BaseException, so no `except Exception` in the code under test takes it for an error
    it can handle.
    """


class BrokerDown(ConnectionError):
    """The broker does not answer (a simulated outage)."""


@dataclass(eq=False)
class Message:
    serial: int  # the order the broker took messages in, over all streams
    stream: str  # the stream published to; for a retry, the stream it goes back to
    key: str
    body: bytes
    headers: dict[str, str]
    event_type: str
    origin: str  # who published it: relay:<replica>, publish:<replica>, retry:<service>, inject
    event_id: str | None
    sequence: int | None
    due: float = 0.0  # a retry: when it is due, in simulated seconds

    def delivery(self) -> Delivery:
        return (self.body, dict(self.headers))


def identify(body: bytes) -> tuple[str | None, str | None, int | None]:
    """(event id, aggregate id, sequence) of a body, where it is an envelope that has them."""
    try:
        raw = json.loads(body)
    except ValueError:
        return None, None, None
    if not isinstance(raw, dict):
        return None, None, None
    sequence = raw.get("sequence")
    return (
        str(raw["id"]) if raw.get("id") is not None else None,
        str(raw["aggregate_id"]) if raw.get("aggregate_id") is not None else None,
        sequence if isinstance(sequence, int) else None,
    )


@dataclass
class Subscriber:
    """One replica's handler of one stream."""

    replica: str
    service: str
    stream: str
    handler: BatchHandler
    types: frozenset[str] | None


@dataclass(eq=False)
class Batch:
    """What a replica has fetched from one source and not yet acknowledged."""

    replica: str
    service: str
    source: str  # where it came from (a topic or queue of the model's)
    messages: list[Message]
    # the model's own: where an ack moves its read positions, and under which assignment
    commits: list[tuple[Any, int]] = field(default_factory=list)
    generation: int = 0
    not_before: float = 0.0  # a late delivery: not handed to its replica before
    retry: bool = False  # from a retry source: its messages name their stream


@dataclass
class Observation:
    """Something the broker saw that breaks a promise on its own (the engine reports it)."""

    invariant: str
    detail: str


class SimBroker(ABC):
    """The broker of one simulated run; the model (a subclass) says how it delivers."""

    # After a message of a key fails to publish, the later ones of the key are not sent (the
    # transport publishes a key's messages one after another).
    keys_stop_at_failure = False

    def __init__(self, clock: Callable[[], float]) -> None:
        self.now = clock
        self.up = True
        self.serial = 0
        self.subscribers: dict[tuple[str, str], Subscriber] = {}  # (replica, stream)
        self.readers: dict[str, list[str]] = {}  # stream -> the services that read it
        self.publishers: dict[str, str] = {}  # stream -> the service that publishes it
        self.published: dict[str, list[Message]] = {}  # every message taken, per stream
        self.dead_letters: dict[str, list[Message]] = {}
        self.observations: list[Observation] = []
        self.in_flight: dict[tuple[str, str], Batch] = {}  # (replica, source)
        self.retry_delays: dict[str, tuple[float, ...]] = {}  # service -> its retry tiers
        self.routed: dict[str, list[Message]] = {}  # service -> every message routed to it
        # Until when each service's retries come back with their x-attempts header mangled.
        self.mangle: dict[str, float] = {}
        self.mangled = 0

    # --- topology -------------------------------------------------------------------

    def declare_stream(self, stream: str, publisher: str) -> None:
        self.publishers[stream] = publisher
        self.published.setdefault(stream, [])
        self.readers.setdefault(stream, [])

    def add_reader(
        self,
        service: str,
        stream: str,
        retry_delays: Sequence[float],
        *,
        retained: float | None = None,
    ) -> None:
        """`service` reads `stream` from now on: all of it, or (a service added later) what
        the broker still holds for a newcomer, `retained` being the share of the stream so
        far that retention kept (where the model keeps any)."""
        self.readers[stream].append(service)
        self.retry_delays[service] = tuple(sorted(set(retry_delays)))
        self.dead_letters.setdefault(service, [])
        self.routed.setdefault(service, [])

    @abstractmethod
    def join(self, replica: str, service: str, stream: str) -> None:
        """A replica of `service` subscribes to `stream`."""

    @abstractmethod
    def rebalance(self) -> None:
        """The broker moves consumers' shares: batches in flight can no longer be acked."""

    def bind(self, service: str, stream: str, types: frozenset[str] | None) -> None:
        """A started consumer takes only `types` of `stream` where the broker routes by type."""
        return None

    # --- publishing -----------------------------------------------------------------

    def publish(
        self,
        stream: str,
        body: bytes,
        key: str,
        event_type: str,
        headers: Mapping[str, str] | None,
        origin: str,
    ) -> Message:
        """Take a message for `stream` and route it; raises as the real broker would."""
        message = self._take(stream, key, body, headers, event_type, origin)
        reached = self._route(message)
        self.published.setdefault(stream, []).append(message)
        for service in reached:
            self.routed[service].append(message)
        sender = origin.removeprefix("publish:").split("/")[0]
        others = [service for service in reached if service != sender]
        if origin.startswith("publish:") and self.publishers.get(stream) != sender and others:
            self.observations.append(
                Observation(
                    "a replay reaches only its service",
                    f"{sender} replayed {event_type or 'a message'} "
                    f"{message.event_id or '(no id)'} of its dead letters to the shared stream "
                    f"{stream}: {', '.join(others)} got it too",
                )
            )
        return message

    def _take(
        self,
        stream: str,
        key: str,
        body: bytes,
        headers: Mapping[str, str] | None,
        event_type: str,
        origin: str,
        due: float = 0.0,
    ) -> Message:
        """A message the broker takes (it raises while down), numbered in the order taken."""
        if not self.up:
            raise BrokerDown("the simulated broker is down")
        event_id, _, sequence = identify(body)
        self.serial += 1
        return Message(
            self.serial,
            stream,
            key,
            body,
            dict(headers or {}),
            event_type,
            origin,
            event_id,
            sequence,
            due,
        )

    @abstractmethod
    def _route(self, message: Message) -> list[str]:
        """Put `message` where its readers take it from (raise if it cannot be taken);
        returns those readers."""

    def publish_retry(
        self,
        service: str,
        stream: str,
        body: bytes,
        headers: Mapping[str, str],
        key: str,
        delay: float,
    ) -> None:
        message = self._take(stream, key, body, headers, "", f"retry:{service}", self.now() + delay)
        if self.now() < self.mangle.get(service, 0.0):
            self.mangled += 1
            count = message.headers.get(ATTEMPTS_HEADER, "0")
            message.headers[ATTEMPTS_HEADER] = count.translate(SUPERSCRIPTS)
        self._hold_retry(service, message, delay)

    @abstractmethod
    def _hold_retry(self, service: str, message: Message, delay: float) -> None:
        """Keep a retry until it is due, then give it back to `service`."""

    def publish_dead_letter(
        self, service: str, body: bytes, headers: Mapping[str, str], key: str
    ) -> None:
        stream = headers.get("x-original-topic", "")
        self.dead_letters[service].append(
            self._take(stream, key, body, headers, "", f"dead:{service}")
        )

    # --- delivering -----------------------------------------------------------------

    def tick(self) -> None:
        """Time passed: whatever waits for time may move on."""
        return None

    @abstractmethod
    def next_due(self) -> float | None:
        """When the next message that waits for time falls due (None: none waits)."""

    @abstractmethod
    def sources(self, replica: str, service: str) -> list[str]:
        """Where `replica` could fetch a batch now."""

    @abstractmethod
    def fetch(self, replica: str, service: str, source: str, size: int, order: Any) -> Batch:
        """Take a batch from `source` for `replica` (`order`: a random.Random, where the
        model has a choice to make); it is in flight until processed."""

    def ready(self) -> list[Batch]:
        """Batches in flight that their replica can apply now, oldest fetch first."""
        now = self.now()
        return [b for b in self.in_flight.values() if b.not_before <= now]

    def subscriber(self, replica: str, stream: str) -> Subscriber:
        return self.subscribers[(replica, stream)]

    async def process(self, batch: Batch, *, ack_lost: bool = False) -> None:
        """Hand `batch` to its replica's handler; acknowledge it if that returns.

        A raising handler (or a Crash) leaves the batch for redelivery; `ack_lost`: it
        returned, but the ack never arrived.
        """
        del self.in_flight[(batch.replica, batch.source)]
        try:
            await self._deliver(batch)
        except BaseException:
            self._give_back(batch)
            raise
        if ack_lost:
            self._give_back(batch)
        else:
            self._ack(batch)

    async def _deliver(self, batch: Batch) -> None:
        """One handler call per stream: a retry source mixes a service's streams."""
        by_stream: dict[str, list[Delivery]] = {}
        for message in batch.messages:
            by_stream.setdefault(message.stream, []).append(message.delivery())
        for stream, deliveries in by_stream.items():
            await self.subscriber(batch.replica, stream).handler(deliveries)

    @abstractmethod
    def _ack(self, batch: Batch) -> None: ...

    @abstractmethod
    def _give_back(self, batch: Batch) -> None:
        """Unacknowledged: the broker delivers it again."""

    def crash(self, replica: str) -> None:
        """A replica's process died: what it had fetched goes back to the broker."""
        for key in [k for k in self.in_flight if k[0] == replica]:
            self._give_back(self.in_flight.pop(key))

    @abstractmethod
    def backlog(self, service: str) -> int:
        """Messages `service` has yet to take: queued, in flight, or waiting to retry."""


def model(broker: str | None = None) -> Callable[[Callable[[], float]], SimBroker]:
    """The delivery model of `broker` (default: the project's): `broker_<broker>.py`."""
    module = importlib.import_module(f".broker_{broker or shipped_broker()}", __package__)
    made: Callable[[Callable[[], float]], SimBroker] = module.Model
    return made


@dataclass
class SimConfig(DeliveryConfig):
    service: str = "sim"
    # A paused or database-less consumer hands its batch back at once: the scheduler
    # redelivers it on the simulated clock (a wait here would be real time).
    batch_hold_seconds: float = 0.0

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_topic or dead_letter_stream(self.service)


@dataclass
class PublishPlan:
    """How one relay batch goes: all of it reaches the broker unless `reach` says fewer;
    `lost` confirms (the broker has the message, the relay hears a timeout); `crash`
    after the messages that reach it; `then` runs once they are in (a leader change)."""

    reach: int | None = None
    lost: frozenset[int] = frozenset()
    crash: bool = False
    then: Callable[[], Awaitable[None]] | None = None


# What the engine does at a relay's publish (the faults of the publishing side).
PublishHook = Callable[["SimTransport", Sequence[Outgoing]], Awaitable[PublishPlan]]


class SimTransport:
    """One service replica's connection to the simulated broker (eventkit's Transport)."""

    def __init__(
        self,
        broker: SimBroker,
        service: str,
        replica: str,
        config: SimConfig,
        on_publish: PublishHook,
    ) -> None:
        self.broker = broker
        self.service = service
        self.replica = replica
        self.config: TransportConfig = config
        self.on_publish = on_publish

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None:
        taken = frozenset(types) if types is not None else None
        self.broker.subscribers[(self.replica, stream)] = Subscriber(
            self.replica, self.service, stream, handler, taken
        )
        self.broker.join(self.replica, self.service, stream)

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def recover(self) -> None:
        return None

    async def publish(self, message: Outgoing) -> None:
        origin = f"publish:{self.replica}"
        self.broker.publish(
            message.stream, message.body, message.key, message.event_type, message.headers, origin
        )

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        plan = await self.on_publish(self, messages)
        reach = len(messages) if plan.reach is None else plan.reach
        outcomes: list[Outcome] = []
        failed: dict[str, BaseException] = {}
        for index, message in enumerate(messages[:reach]):
            if message.key in failed and self.broker.keys_stop_at_failure:
                outcomes.append(failed[message.key])
                continue
            try:
                self.broker.publish(
                    message.stream,
                    message.body,
                    message.key,
                    message.event_type,
                    _headers(message),
                    f"relay:{self.replica}",
                )
            except ConnectionError as exc:
                outcomes.append(exc)
                if message.key:
                    failed[message.key] = exc
                continue
            if index in plan.lost:
                lost = TimeoutError("no confirm within the timeout (simulated)")
                outcomes.append(lost)
                if message.key:
                    failed[message.key] = lost
            else:
                outcomes.append(None)
        if plan.then is not None:
            await plan.then()
        if plan.crash:
            raise Crash(f"{self.replica}'s relay died after {reach} of {len(messages)} publishes")
        return outcomes + [TimeoutError("not sent")] * (len(messages) - len(outcomes))

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None:
        self.broker.publish_retry(self.service, stream, body, headers, key, delay)

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        self.broker.publish_dead_letter(self.service, body, headers, key)

    async def ping(self) -> bool:
        return self.broker.up

    def asyncapi(self, title: str) -> dict[str, Any]:
        return {"asyncapi": "3.0.0", "info": {"title": title, "version": "sim"}, "channels": {}}


def _headers(message: Outgoing) -> dict[str, str]:
    return {
        "event-type": message.event_type,
        "aggregate-id": message.key,
        **(message.headers or {}),
    }
