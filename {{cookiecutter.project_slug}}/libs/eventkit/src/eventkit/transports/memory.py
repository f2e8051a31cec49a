"""A transport inside this process: each published message goes straight to its subscribers.

For unit tests and a service run alone (BROKER=memory); nothing leaves the process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from eventkit.roster import dead_letter_stream
from eventkit.settings import ServiceSettings, default
from eventkit.transports import RawHandler


@dataclass
class MemoryConfig:
    service: str = "memory"
    max_retries: int = default("MAX_RETRIES")

    @property
    def dead_letters(self) -> str:
        return dead_letter_stream(self.service)


def from_settings(settings: ServiceSettings) -> MemoryTransport:
    return MemoryTransport(MemoryConfig(settings.SERVICE_NAME, settings.MAX_RETRIES))


class MemoryTransport:
    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        self._subscribers: dict[str, list[tuple[RawHandler, Collection[str] | None]]] = defaultdict(
            list
        )
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
        self._subscribers[stream].append((handler, types))

    def declare_publisher(self, stream: str, *, description: str = "") -> None:
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
        for handler, types in list(self._subscribers[stream]):
            if types is None or event_type in types:
                await handler(body, dict(headers or {}))

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
