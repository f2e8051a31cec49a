"""A transport inside this process: each published message goes straight to its subscribers.

For unit tests and a service run alone (BROKER=memory); nothing leaves the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventkit.bus import EventBus
from eventkit.roster import dead_letter_stream
from eventkit.settings import ServiceSettings
from eventkit.transports import (
    BatchHandler,
    DeliveryConfig,
    EventTypes,
    Outcome,
    Outgoing,
    delivery_from_settings,
)

LOCAL_URL = "memory://"  # nothing to reach: BROKER_URL means nothing here


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
        self.handlers: dict[str, BatchHandler] = {}
        # (stream, body, headers, delay) of each retry handed back later
        self.retries: list[tuple[str, bytes, dict[str, str], float]] = []
        self._waiting: set[asyncio.Task[None]] = set()

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None:
        async def deliver(message: tuple[bytes, str, dict[str, str]]) -> None:
            body, event_type, headers = message
            if types is None or event_type in types:
                await handler([(body, headers)])

        self.handlers[stream] = handler
        self.bus.subscribe(stream, deliver)

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        return None

    async def start(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.up = False
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    async def recover(self) -> None:
        return None

    async def publish(self, message: Outgoing) -> None:
        if not self.up:
            raise ConnectionError("in-process transport is stopped")
        self.published.append((message.stream, message.body))
        payload = (message.body, message.event_type, dict(message.headers or {}))
        await self.bus.publish(message.stream, payload)

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        """One at a time, in order: in one process there is no round trip to overlap."""
        outcomes: list[Outcome] = []
        failed: dict[str, BaseException] = {}  # a key stops at its first failure
        for message in messages:
            if message.key in failed:
                outcomes.append(failed[message.key])
                continue
            try:
                await self.publish(message)
            except Exception as exc:
                outcomes.append(exc)
                if message.key:
                    failed[message.key] = exc
            else:
                outcomes.append(None)
        return outcomes

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None:
        if not self.up:
            raise ConnectionError("in-process transport is stopped")
        self.retries.append((stream, body, dict(headers), delay))

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.handlers[stream]([(body, dict(headers))])

        task = asyncio.create_task(later())
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

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
