"""The events of this system: each type's stream, schema version and data.

Changing a schema in a way old events do not fit means a new version and an upcaster
(`EVENTS.upcaster(type, from_version)`), so events already stored still apply.
`make schema-check` (part of `make test`) holds each schema to its committed snapshot,
event-schemas.json beside this package; `make catalog` refreshes it.
"""

from decimal import Decimal
from typing import Any

from pydantic import Field

from eventkit.registry import EventData, EventRegistry, EventType

USER_EVENTS = "user.events"
BILLING_EVENTS = "billing.events"


class UserCreated(EventData):
    """v2 added `locale`; v1 events are lifted by `user_created_v1_to_v2` below."""

    user_id: str
    name: str
    email: str
    locale: str = "en"


class NameChanged(EventData):
    user_id: str
    new_name: str


class EmailChanged(EventData):
    user_id: str
    new_email: str


class UserDeactivated(EventData):
    user_id: str


class InvoiceIssued(EventData):
    invoice_id: str
    user_id: str
    amount: Decimal = Field(gt=0)


EVENTS = EventRegistry(
    [
        EventType("UserCreated", USER_EVENTS, 2, UserCreated),
        EventType("NameChanged", USER_EVENTS, 1, NameChanged),
        EventType("EmailChanged", USER_EVENTS, 1, EmailChanged),
        EventType("UserDeactivated", USER_EVENTS, 1, UserDeactivated),
        EventType("InvoiceIssued", BILLING_EVENTS, 1, InvoiceIssued),
    ]
)


@EVENTS.upcaster("UserCreated", 1)
def user_created_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Users signed up before v2 were all English-speaking."""
    return {**data, "locale": "en"}
