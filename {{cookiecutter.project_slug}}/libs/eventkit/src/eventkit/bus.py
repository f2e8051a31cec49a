"""In-process event bus: the same subscribe/publish surface without a broker.

Inside one service it lets parts react to each other's events; in unit tests
`InProcessTransport` stands in for the broker so a service runs alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eventkit.transport import RawHandler

DataHandler = Callable[[dict[str, Any]], Awaitable[None]]


class EventBus:
    """`subscribe(type, handler)` and `await publish(type, data)`, in this process only."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[DataHandler]] = defaultdict(list)

    def subscribe(self, event_type: str, handler: DataHandler) -> None:
        self._handlers[event_type].append(handler)

    async def publish(self, event_type: str, data: dict[str, Any]) -> None:
        for handler in list(self._handlers[event_type]):
            await handler(data)


class InProcessTransport:
    """A Transport that hands each published message straight to this process's subscribers."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[RawHandler]] = defaultdict(list)
        self.published: list[tuple[str, bytes]] = []
        self.dead_letters: list[tuple[str, bytes, dict[str, str]]] = []
        self.up = True

    def subscribe(self, stream: str, handler: RawHandler) -> None:
        self._subscribers[stream].append(handler)

    def declare_publisher(self, stream: str) -> None:
        return None

    async def start(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.up = False

    async def recover(self) -> None:
        return None

    async def publish(
        self,
        stream: str,
        body: bytes,
        *,
        key: str,
        event_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not self.up:
            raise ConnectionError("in-process transport is stopped")
        self.published.append((stream, body))
        for handler in list(self._subscribers[stream]):
            await handler(body, dict(headers or {}))

    async def publish_dead_letter(self, service: str, body: bytes, headers: dict[str, str]) -> None:
        if not self.up:
            raise ConnectionError("in-process transport is stopped")
        self.dead_letters.append((f"dlq.{service}", body, headers))

    async def ping(self) -> bool:
        return self.up

    def asyncapi(self, title: str) -> dict[str, Any]:
        return {"asyncapi": "3.0.0", "info": {"title": title, "version": "0"}, "channels": {}}
