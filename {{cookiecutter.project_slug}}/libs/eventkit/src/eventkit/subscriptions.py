"""What a service subscribes to: `@subscriptions.on_message(stream, types=...)` handlers.

A stream may have any number of handlers; each may name the event types it takes. A
handler registered with `on_batch` instead takes all of a batch's events at once (after
the inbox and the order check), for projections that fold many events into one write.

Handlers run inside the batch's transaction and await nothing but its session: what
reaches outside (a message to a person, a call to another system) is written down there
and done after the commit, by a worker (eventkit.kit.Worker). A handler that awaited the
network would hold the batch's transaction open meanwhile; on SQLite, whose statements run
on the event loop (db.SQLiteOnTheLoop), it would stall the process's next writer as long.

A service has one `Subscriptions`, the one handed to `create_service`. A second one made at
the top of the same module would take the first one's name and leave its handlers behind,
never to run, without a word; so it is refused there, naming the one to add handlers to.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from eventkit.envelope import Envelope

Handler = Callable[[Envelope, AsyncSession], Awaitable[None]]
EventBatchHandler = Callable[[list[Envelope], AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    stream: str
    handler: Handler | EventBatchHandler
    types: frozenset[str] | None  # None: every type of the stream
    batch: bool = False  # the handler takes a list of events

    def takes(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


class Subscriptions:
    """The handlers of one service, registered with `on_message`, and the read models
    they project into (a rebuild empties those and replays the streams into them)."""

    def __init__(self, read_models: Sequence[type[Any]] = ()) -> None:
        caller = sys._getframe(1)
        if caller.f_code.co_name == "<module>":  # one made inside a function is its caller's
            _refuse_a_second(caller.f_globals)
        self.subscriptions: list[Subscription] = []
        self.read_models = list(read_models)

    def on_message(
        self, stream: str, *, types: Iterable[str] | None = None
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            taken = frozenset(types) if types is not None else None
            self.subscriptions.append(Subscription(stream, handler, taken))
            return handler

        return register

    def on_batch(
        self, stream: str, *, types: Iterable[str] | None = None
    ) -> Callable[[EventBatchHandler], EventBatchHandler]:
        """Register a handler that takes a batch's events of `stream` (of `types`) at once."""

        def register(handler: EventBatchHandler) -> EventBatchHandler:
            taken = frozenset(types) if types is not None else None
            self.subscriptions.append(Subscription(stream, handler, taken, batch=True))
            return handler

        return register

    @property
    def streams(self) -> list[str]:
        return list(dict.fromkeys(s.stream for s in self.subscriptions))

    def handlers(self, stream: str, event_type: str) -> list[Handler]:
        """The one-event handlers of `stream` that take `event_type`."""
        return [
            s.handler  # type: ignore[misc]
            for s in self.subscriptions
            if s.stream == stream and not s.batch and s.takes(event_type)
        ]

    def batch_subscriptions(self, stream: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.stream == stream and s.batch]

    def takes(self, stream: str, event_type: str) -> bool:
        """Whether any handler of `stream` takes `event_type`."""
        return any(s.stream == stream and s.takes(event_type) for s in self.subscriptions)

    def types(self, stream: str) -> frozenset[str] | None:
        """The event types the handlers of `stream` take; None when one takes them all."""
        taken: set[str] = set()
        for sub in self.subscriptions:
            if sub.stream == stream:
                if sub.types is None:
                    return None
                taken |= sub.types
        return frozenset(taken)


def _refuse_a_second(module: dict[str, Any]) -> None:
    """Raise when the module being imported holds a Subscriptions already."""
    for name, value in module.items():
        if isinstance(value, Subscriptions):
            raise ValueError(
                f"{module.get('__name__')} has its Subscriptions already (`{name}`), and a "
                f"service has one: add handlers to it with @{name}.on_message(...) instead "
                "of making another, which would silently drop the handlers above it"
            )
