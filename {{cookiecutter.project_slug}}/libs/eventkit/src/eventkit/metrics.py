"""Prometheus metrics shared by every service (served on /metrics)."""

from prometheus_client import Counter, Gauge, Histogram, Info

EVENTS_PUBLISHED = Counter(
    "eventkit_events_published_total", "Events published to the broker", ["stream", "type"]
)
EVENTS_RESENT = Counter(
    "eventkit_events_resent_total",
    "Events sent again after a broker outage (each published once more; consumers drop them)",
)
EVENTS_CONSUMED = Counter(
    "eventkit_events_consumed_total", "Events applied by this service", ["stream", "type"]
)
EVENTS_DUPLICATE = Counter(
    "eventkit_events_duplicate_total", "Redelivered events skipped by the inbox", ["stream"]
)
EVENTS_RETRIED = Counter(
    "eventkit_events_retried_total", "Handler attempts that failed", ["stream"]
)
EVENTS_DEAD_LETTERED = Counter(
    "eventkit_events_dead_lettered_total", "Events sent to the dead letters", ["stream"]
)
HANDLER_SECONDS = Histogram(
    "eventkit_handler_duration_seconds", "Time to apply one event", ["stream"]
)
OUTBOX_PENDING = Gauge("eventkit_outbox_pending", "Events written but not yet published")
OUTBOX_LAG_SECONDS = Gauge(
    "eventkit_outbox_lag_seconds", "Age of the oldest event not yet published (0 when none)"
)
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"]
)
RELAY_LEADER = Gauge(
    "eventkit_outbox_relay_leader", "1 while this process is the one that publishes the outbox"
)
BROKER_UP = Gauge("eventkit_broker_up", "1 while the broker answers this process")
EVENTS_WAITING = Counter(
    "eventkit_events_not_yet_due_total",
    "Events that arrived before an earlier one of their aggregate, and were retried",
    ["stream"],
)
EVENTS_HELD = Counter(
    "eventkit_events_held_total",
    "Events of a type or version this service does not know yet, retried later",
    ["stream", "type"],
)
# What a running service retries with, for tests and people who did not start it: the fault
# suite's expected attempts come from here, not from its own environment.
RETRY_POLICY = Info("eventkit_retry", "MAX_RETRIES and RETRY_DELAYS_SECONDS of this process")
