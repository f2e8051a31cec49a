"""What eventkit needs from a message broker; broker.py and bus.py provide it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

RawHandler = Callable[[bytes, Mapping[str, str]], Awaitable[None]]


class Transport(Protocol):
    def subscribe(self, stream: str, handler: RawHandler) -> None:
        """Deliver every message of `stream` to `handler`; call before start()."""

    def declare_publisher(self, stream: str) -> None:
        """Document that this service publishes `stream` (for /asyncapi)."""

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

    async def publish_dead_letter(self, service: str, body: bytes, headers: dict[str, str]) -> None:
        """Park a message in the service's dead-letter queue `dlq.<service>`."""

    async def ping(self) -> bool: ...

    def asyncapi(self, title: str) -> dict[str, Any]: ...
