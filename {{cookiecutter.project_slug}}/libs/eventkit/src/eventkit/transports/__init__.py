"""What eventkit needs from a message broker, and the adapter picked by the BROKER setting.

The adapters sit side by side: `kafka`, `rabbitmq`, `sqs` and `memory` (in this process
only). A generated project ships one real broker's adapter; the others are deleted at
generation.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eventkit.envelope import Envelope
from eventkit.settings import ServiceSettings, default

if TYPE_CHECKING:
    from faststream.message import StreamMessage

# One received message: its body and headers.
Delivery = tuple[bytes, Mapping[str, str]]
# Takes a batch of one stream's messages in the order received; the batch is acknowledged
# when it returns and redelivered if it raises.
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
# The event types a subscriber takes (a broker that routes by type binds each); None: all.
EventTypes = Collection[str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One message to publish: what `publish` takes (and `publish_batch`, many)."""

    stream: str
    body: bytes
    key: str
    event_type: str
    headers: Mapping[str, str] | None = None

    @classmethod
    def of(cls, stream: str, event: Envelope) -> Outgoing:
        """`event` as its publisher sends it: keyed by its aggregate, named by its type."""
        return cls(
            stream=stream,
            body=event.to_bytes(),
            key=event.key,
            event_type=event.type,
        )


# What became of one message of a batch: None once the broker has it, else the error.
Outcome = BaseException | None


@dataclass(kw_only=True)
class DeliveryConfig:
    """What every transport's config says about batches and failed deliveries."""

    # Where dead letters go: a Kafka topic or a RabbitMQ queue; unset: dlq.<service>.
    dead_letter_topic: str | None = None
    max_retries: int = default("MAX_RETRIES")
    retry_delays_seconds: tuple[float, ...] = default("RETRY_DELAYS_SECONDS")
    batch_size: int = default("CONSUMER_BATCH_SIZE")
    batch_wait_ms: int = default("CONSUMER_BATCH_WAIT_MS")
    first_event_wait_seconds: float = default("FIRST_EVENT_WAIT_SECONDS")
    unknown_event_hold_seconds: float = default("UNKNOWN_EVENT_HOLD_SECONDS")
    # How long a batch may wait in the consumer (for a rebuild's pause to end, or for the
    # database to answer again) before it goes back to the broker, to be delivered again.
    batch_hold_seconds: float = 30.0

    def retry_delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based); the last delay repeats."""
        return self.retry_delays_seconds[min(attempt, len(self.retry_delays_seconds)) - 1]

    @property
    def retry_tiers(self) -> list[float]:
        """The distinct delays retries use: one delay topic or queue each."""
        return sorted({self.retry_delay(n) for n in range(1, self.max_retries + 1)})


async def message_as_received(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """A FastStream decoder that hands a handler the message itself, its body still the
    bytes received (the consumer parses each envelope once), with its headers. Brokers
    built with `apply_types=False` inject nothing: fast_depends resolved a message
    parameter in a worker thread, a thread hop per delivery or batch."""
    return message


def delivery_from_settings(settings: ServiceSettings) -> dict[str, Any]:
    """The DeliveryConfig fields, as the settings give them."""
    return {
        "dead_letter_topic": settings.DEAD_LETTER_TOPIC,
        "max_retries": settings.MAX_RETRIES,
        "retry_delays_seconds": settings.RETRY_DELAYS_SECONDS,
        "batch_size": settings.CONSUMER_BATCH_SIZE,
        "batch_wait_ms": settings.CONSUMER_BATCH_WAIT_MS,
        "first_event_wait_seconds": settings.FIRST_EVENT_WAIT_SECONDS,
        "unknown_event_hold_seconds": settings.UNKNOWN_EVENT_HOLD_SECONDS,
    }


class TransportConfig(Protocol):
    max_retries: int
    batch_size: int
    first_event_wait_seconds: float
    unknown_event_hold_seconds: float
    batch_hold_seconds: float

    def retry_delay(self, attempt: int) -> float: ...

    @property
    def retry_tiers(self) -> list[float]:
        """The distinct delays `publish_retry` takes."""

    @property
    def dead_letters(self) -> str:
        """Where dead letters go: a Kafka topic or a RabbitMQ queue."""


class Transport(Protocol):
    @property
    def config(self) -> TransportConfig:
        """Read-only here, so each adapter may keep its own config class."""

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None:
        """Deliver the messages of `stream` (of `types`, if given) to `handler`; before start().

        Batches hold up to `config.batch_size` messages; retries of this stream come back
        to the same handler (see `publish_retry`).
        """

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        """This service publishes `stream`: make sure it exists, and document it (/asyncapi).

        `subscribers` are the services that read it (from the roster): where the broker
        keeps nothing for a reader that has never connected (RabbitMQ), their queues are
        declared too, so nothing published before they first start is lost.
        """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def recover(self) -> None:
        """Called once the broker answers again after an outage."""

    async def publish(self, message: Outgoing) -> None:
        """Publish one message and wait until the broker has taken it."""

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        """Publish `messages` with many in flight at once; one outcome each, in their order.

        One key's messages reach the broker in the order given; after one of them fails,
        the later ones of its key may or may not have gone out (the caller sends them
        again). What the broker has not confirmed within `timeout` seconds counts as
        failed (TimeoutError). Never raises for a message: its outcome says.
        """

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None:
        """Give the message back to this service's `stream` handler in `delay` seconds.

        The broker holds it meanwhile (a Kafka retry topic, a RabbitMQ delay queue), so the
        stream goes on and a restart loses nothing. `delay` is one of `config.retry_tiers`.
        """

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        """Park a message in this service's dead letters (`config.dead_letters`)."""

    async def ping(self) -> bool: ...

    def asyncapi(self, title: str) -> dict[str, Any]: ...


async def publish_per_key(
    publish: Callable[[Outgoing], Awaitable[object]],
    messages: Sequence[Outgoing],
    timeout: float,
) -> list[Outcome]:
    """`publish_batch` for a client whose `publish` waits for the broker's confirm.

    Each key's messages are published one after another, and the keys all at once, so
    confirms are awaited together while a key's order holds whatever the client does
    inside. A key stops at its first failure (its later messages fail the same way); a
    message without a key has no order to keep and goes on its own.
    """
    outcomes: list[Outcome] = [TimeoutError(f"no confirm within {timeout}s")] * len(messages)
    chains: dict[str | int, list[int]] = {}
    for index, message in enumerate(messages):
        chains.setdefault(message.key or index, []).append(index)

    async def publish_chain(chain: list[int]) -> None:
        for place, index in enumerate(chain):
            try:
                await publish(messages[index])
            except Exception as exc:
                for later in chain[place:]:
                    outcomes[later] = exc
                return
            outcomes[index] = None

    tasks = [asyncio.create_task(publish_chain(chain)) for chain in chains.values()]
    try:
        await asyncio.wait(tasks, timeout=timeout)
    finally:  # past the timeout, or cancelled: what has not finished stays unconfirmed
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes


def create_transport(settings: ServiceSettings) -> Transport:
    """The adapter that settings.BROKER names, configured from the settings."""
    adapter = importlib.import_module(f"eventkit.transports.{settings.broker}")
    transport: Transport = adapter.from_settings(settings)
    return transport
