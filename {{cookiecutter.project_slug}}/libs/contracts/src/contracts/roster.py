"""Every service of the system, written once: its port and the streams it uses.

Scripts, tests, the load tests and the generated deployment files (`make deploy-files`)
read this; `make service NAME=...` adds a line here.
"""

from contracts.events import BILLING_EVENTS, EVENTS, USER_EVENTS
from eventkit.roster import Roster, ServiceSpec

ROSTER = Roster(
    services=(
        ServiceSpec("user", 8001, publishes=(USER_EVENTS,)),
        ServiceSpec("notification", 8002, subscribes=(USER_EVENTS, BILLING_EVENTS)),
        ServiceSpec("analytics", 8003, subscribes=(USER_EVENTS, BILLING_EVENTS)),
        ServiceSpec("billing", 8004, publishes=(BILLING_EVENTS,), subscribes=(USER_EVENTS,)),
    ),
    events=EVENTS,
)
