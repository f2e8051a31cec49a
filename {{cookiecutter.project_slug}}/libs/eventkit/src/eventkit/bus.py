"""In-process event bus: `subscribe(type, handler)` and `await publish(type, data)`.

Inside one service it lets parts react to each other's events without a broker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

DataHandler = Callable[[dict[str, Any]], Awaitable[None]]


class EventBus:
    """Handlers run in the publisher's task, in the order they subscribed."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[DataHandler]] = defaultdict(list)

    def subscribe(self, event_type: str, handler: DataHandler) -> None:
        self._handlers[event_type].append(handler)

    async def publish(self, event_type: str, data: dict[str, Any]) -> None:
        for handler in list(self._handlers[event_type]):
            await handler(data)
