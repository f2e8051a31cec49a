"""What eventkit needs from a message broker, and the adapter picked by the BROKER setting.

The adapters sit side by side: `kafka`, `rabbitmq` and `memory` (in this process only).
A generated project ships one real broker's adapter; the other is deleted at generation.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from eventkit.settings import ServiceSettings, default

RawHandler = Callable[[bytes, Mapping[str, str]], Awaitable[None]]


@dataclass(kw_only=True)
class DeliveryConfig:
    """What every transport's config says about failed deliveries."""

    # Where dead letters go: a Kafka topic or a RabbitMQ queue; unset: dlq.<service>.
    dead_letter_topic: str | None = None
    max_retries: int = default("MAX_RETRIES")
    retry_backoff_seconds: float = default("RETRY_BACKOFF_SECONDS")
    retry_backoff_max_seconds: float = default("RETRY_BACKOFF_MAX_SECONDS")
    order_wait_seconds: float = default("ORDER_WAIT_SECONDS")


def delivery_from_settings(settings: ServiceSettings) -> dict[str, Any]:
    """The DeliveryConfig fields, as the settings give them."""
    return {
        "dead_letter_topic": settings.DEAD_LETTER_TOPIC,
        "max_retries": settings.MAX_RETRIES,
        "retry_backoff_seconds": settings.RETRY_BACKOFF_SECONDS,
        "retry_backoff_max_seconds": settings.RETRY_BACKOFF_MAX_SECONDS,
        "order_wait_seconds": settings.ORDER_WAIT_SECONDS,
    }


class TransportConfig(Protocol):
    max_retries: int
    retry_backoff_seconds: float
    retry_backoff_max_seconds: float
    order_wait_seconds: float

    @property
    def dead_letters(self) -> str:
        """Where dead letters go: a Kafka topic or a RabbitMQ queue."""


class Transport(Protocol):
    config: TransportConfig

    def subscribe(
        self,
        stream: str,
        handler: RawHandler,
        *,
        types: Collection[str] | None = None,
        description: str = "",
    ) -> None:
        """Deliver the messages of `stream` (of `types`, if given) to `handler`; before start()."""

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

    async def publish(
        self,
        stream: str,
        body: bytes,
        *,
        key: str,
        event_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish and wait until the broker has taken the message."""

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        """Park a message in this service's dead letters (`config.dead_letters`)."""

    async def ping(self) -> bool: ...

    def asyncapi(self, title: str) -> dict[str, Any]: ...


def create_transport(settings: ServiceSettings) -> Transport:
    """The adapter that settings.BROKER names, configured from the settings."""
    adapter = importlib.import_module(f"eventkit.transports.{settings.broker}")
    transport: Transport = adapter.from_settings(settings)
    return transport
