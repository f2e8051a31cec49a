"""eventkit: the event layer every service of this project shares; it knows no domain."""

from eventkit.app import create_service
from eventkit.deps import Kit, get_kit
from eventkit.envelope import Envelope, new_event
from eventkit.kit import ServiceKit
from eventkit.outbox import add_to_outbox, insert_into_outbox
from eventkit.registry import EventData, EventRegistry, EventType, InvalidEvent
from eventkit.roster import Roster, ServiceSpec
from eventkit.settings import ServiceSettings
from eventkit.subscriptions import Subscriptions

__all__ = [
    "Envelope",
    "EventData",
    "EventRegistry",
    "EventType",
    "InvalidEvent",
    "Kit",
    "Roster",
    "ServiceKit",
    "ServiceSettings",
    "ServiceSpec",
    "Subscriptions",
    "add_to_outbox",
    "create_service",
    "get_kit",
    "insert_into_outbox",
    "new_event",
]
