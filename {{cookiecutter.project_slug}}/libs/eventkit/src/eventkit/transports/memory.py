"""A transport inside this process: each published message goes straight to its subscribers.

For unit tests and a service run alone (BROKER=memory); nothing leaves the process.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from eventkit.bus import EventBus
from eventkit.roster import dead_letter_stream
from eventkit.settings import ServiceSettings
from eventkit.transports import DeliveryConfig, RawHandler, delivery_from_settings


@dataclass
class MemoryConfig(DeliveryConfig):
    service: str = "memory"

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_topic or dead_letter_stream(self.service)


def from_settings(settings: ServiceSettings) -> MemoryTransport:
    return MemoryTransport(
        MemoryConfig(service=settings.SERVICE_NAME, **delivery_from_settings(settings))
    )


class MemoryTransport:
    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        self.bus = EventBus()
        self.published: list[tuple[str, bytes]] = []
        self.dead_letters: list[tuple[str, bytes, dict[str, str]]] = []
        self.up = True

    def subscribe(
        self,
        stream: str,
        handler: RawHandler,
        *,
        types: Collection[str] | None = None,
        description: str = "",
    ) -> None:
        async def deliver(message: tuple[bytes, str, dict[str, str]]) -> None:
            body, event_type, headers = message
            if types is None or event_type in types:
                await handler(body, headers)

        self.bus.subscribe(stream, deliver)

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
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
        await self.bus.publish(stream, (body, event_type, dict(headers or {})))

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        if not self.up:
            raise ConnectionError("in-process transport is stopped")
        self.dead_letters.append((self.config.dead_letters, body, dict(headers)))

    async def ping(self) -> bool:
        return self.up

    def asyncapi(self, title: str) -> dict[str, Any]:
        return {"asyncapi": "3.0.0", "info": {"title": title, "version": "0"}, "channels": {}}
