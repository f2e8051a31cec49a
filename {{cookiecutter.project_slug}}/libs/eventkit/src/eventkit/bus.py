"""In-process event bus: `subscribe(topic, handler)` and `await publish(topic, data)`.

Parts of one process react to each other's events through it without a broker; the
`memory` transport (transports/memory.py) is built on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

DataHandler = Callable[[Any], Awaitable[None]]


class EventBus:
    """Handlers run in the publisher's task, in the order they subscribed."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[DataHandler]] = defaultdict(list)

    def subscribe(self, topic: str, handler: DataHandler) -> None:
        self._handlers[topic].append(handler)

    async def publish(self, topic: str, data: Any) -> None:
        for handler in list(self._handlers[topic]):
            await handler(data)
