"""A trimmed copy of what SqsTransport needs from eventkit (not importable here without
eventkit's own dependencies).

Copied from `libs/eventkit/src/eventkit/transports/__init__.py` and `eventkit/roster.py`;
the defaults that eventkit reads from ServiceSettings are written out (MAX_RETRIES=5,
RETRY_DELAYS_SECONDS=1,5,30,120,300, CONSUMER_BATCH_SIZE=200, ...). When porting, delete
this file and import from `eventkit.transports` and `eventkit.roster` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# One received message: its body and headers.
Delivery = tuple[bytes, Mapping[str, str]]
# Takes a batch of one stream's messages in the order received; the batch is acknowledged
# when it returns and redelivered if it raises.
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
# The event types a subscriber takes (a broker that routes by type binds each); None: all.
EventTypes = Collection[str] | None
# What became of one message of a batch: None once the broker has it, else the error.
Outcome = BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One message to publish (eventkit's also has `Outgoing.of(stream, envelope)`)."""

    stream: str
    body: bytes
    key: str
    event_type: str
    headers: Mapping[str, str] | None = None


@dataclass(kw_only=True)
class DeliveryConfig:
    """What every transport's config says about batches and failed deliveries."""

    dead_letter_topic: str | None = None
    max_retries: int = 5
    retry_delays_seconds: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 300.0)
    batch_size: int = 200
    batch_wait_ms: int = 5
    first_event_wait_seconds: float = 30.0
    unknown_event_hold_seconds: float = 86400.0
    batch_hold_seconds: float = 30.0

    def retry_delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based); the last delay repeats."""
        return self.retry_delays_seconds[min(attempt, len(self.retry_delays_seconds)) - 1]

    @property
    def retry_tiers(self) -> list[float]:
        """The distinct delays retries use."""
        return sorted({self.retry_delay(n) for n in range(1, self.max_retries + 1)})


class TransportConfig(Protocol):
    max_retries: int
    batch_size: int
    first_event_wait_seconds: float
    unknown_event_hold_seconds: float
    batch_hold_seconds: float

    def retry_delay(self, attempt: int) -> float: ...

    @property
    def retry_tiers(self) -> list[float]: ...

    @property
    def dead_letters(self) -> str: ...


class Transport(Protocol):
    """eventkit's Transport protocol (docstrings in the original)."""

    config: TransportConfig

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None: ...

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def recover(self) -> None: ...

    async def publish(self, message: Outgoing) -> None: ...

    async def publish_batch(
        self, messages: Sequence[Outgoing], *, timeout: float
    ) -> list[Outcome]: ...

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None: ...

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None: ...

    async def ping(self) -> bool: ...

    def asyncapi(self, title: str) -> dict[str, Any]: ...


# --- eventkit.roster's naming helpers --------------------------------------------------


def dead_letter_stream(service: str) -> str:
    """Where `service` parks what it gave up on."""
    return f"dlq.{service}"


def stream_subscription(service: str, stream: str) -> str:
    """What `service` reads `stream` through (its queue)."""
    return f"{service}.{stream}"


def retry_stream(service: str, delay: float) -> str:
    """Where `service`'s failed events wait `delay` seconds (Kafka/RabbitMQ: one per delay)."""
    return f"retry.{service}.{round(delay * 1000)}ms"
