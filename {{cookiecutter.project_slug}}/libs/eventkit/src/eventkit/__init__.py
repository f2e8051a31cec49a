"""eventkit: the event layer every service of this project shares."""

from eventkit.consumer import Consumer
from eventkit.envelope import Envelope, new_event
from eventkit.outbox import add_to_outbox
from eventkit.service import Kit, ServiceKit, create_service, get_kit
from eventkit.settings import ServiceSettings

__all__ = [
    "Consumer",
    "Envelope",
    "Kit",
    "ServiceKit",
    "ServiceSettings",
    "add_to_outbox",
    "create_service",
    "get_kit",
    "new_event",
]
