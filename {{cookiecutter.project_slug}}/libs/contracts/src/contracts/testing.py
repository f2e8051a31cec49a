"""Test helpers that know the project's events."""

from contracts.events import EVENTS
from eventkit import Envelope, testing
from eventkit.transports import Transport


async def deliver(transport: Transport, event: Envelope) -> None:
    """Publish `event` on its type's stream, as the producing service's relay would."""
    await testing.deliver(transport, EVENTS[event.type].stream, event)
