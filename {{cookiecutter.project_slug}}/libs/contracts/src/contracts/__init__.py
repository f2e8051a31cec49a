"""The project's contracts: the roster of services and the events they exchange."""

from contracts.events import BILLING_EVENTS, EVENTS, USER_EVENTS
from contracts.roster import ROSTER

__all__ = ["BILLING_EVENTS", "EVENTS", "ROSTER", "USER_EVENTS"]
