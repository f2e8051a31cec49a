"""Settings every service shares; each service subclasses this once, in its settings.py.

Every default lives here. Transport configs (KafkaConfig, RabbitMQConfig) read theirs
from this class too, through `default()`.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, Self

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER = "changethis"
BrokerKind = Literal["kafka", "rabbitmq", "memory"]
# Where each broker answers on a developer's machine when BROKER_URL is not set.
LOCAL_BROKER_URLS: dict[str, str] = {
    "kafka": "localhost:9092",
    "rabbitmq": "amqp://guest:guest@localhost:5672/",
    "memory": "memory://",
}


def shipped_broker() -> BrokerKind:
    """The broker this project was generated for: the one real adapter it ships."""
    for kind in ("kafka", "rabbitmq"):
        if importlib.util.find_spec(f"eventkit.transports.{kind}") is not None:
            return kind  # type: ignore[return-value]
    return "memory"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    SERVICE_NAME: str
    PORT: int
    HOST: str = "127.0.0.1"
    ENVIRONMENT: Literal["development", "staging", "production"] = "development"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Unset: the broker this project was generated for. `memory` runs one process alone.
    BROKER: BrokerKind | None = None
    # Unset: that broker on this machine (localhost:9092, or guest@localhost:5672).
    BROKER_URL: str = ""
    # Empty means a SQLite file of the service's own under var/.
    DATABASE_URL: str = ""

    # A failing handler is retried this often, with full-jitter exponential backoff between
    # these bounds, before its event goes to the dead letters.
    MAX_RETRIES: int = 3
    RETRY_BACKOFF_SECONDS: float = 0.2
    RETRY_BACKOFF_MAX_SECONDS: float = 5.0
    # Where dead letters go (a Kafka topic, or a RabbitMQ queue); unset: dlq.<service>.
    DEAD_LETTER_TOPIC: str | None = None
    OUTBOX_POLL_SECONDS: float = 1.0
    # After a broker outage, events sent this long before it began are sent again: a broker
    # may lose what it had not stored yet, and consumers drop the duplicates.
    OUTBOX_RESEND_SECONDS: float = 60.0
    # Spans also go to this JSON-lines file (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set).
    TRACES_FILE: str | None = None
    # Kafka: partitions and replicas of each stream's topic when this service creates it.
    STREAM_PARTITIONS: int = 3
    STREAM_REPLICATION: int = 1
    # Kafka: the consumer group (unset: the service's name), and where a new group starts.
    GROUP_ID: str | None = None
    AUTO_OFFSET_RESET: Literal["earliest", "latest"] = "earliest"
    # Kafka producer: which replicas must have an event before a publish counts, and
    # idempotent retries (needs a real Kafka; the embedded broker refuses it).
    KAFKA_ACKS: Literal["0", "1", "all"] = "all"
    KAFKA_IDEMPOTENCE: bool = False
    # RabbitMQ: unacknowledged deliveries per consumer. Above 1, one aggregate's events
    # may be applied out of order, so keep 1 until projections check the sequence.
    PREFETCH_COUNT: int = 1

    # Unset in development: admin calls are open. Set it wherever others can reach the service.
    ADMIN_TOKEN: str | None = None

    @property
    def broker(self) -> BrokerKind:
        return self.BROKER or shipped_broker()

    @property
    def broker_url(self) -> str:
        return self.BROKER_URL or LOCAL_BROKER_URLS[self.broker]

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite+aiosqlite:///var/{self.SERVICE_NAME}.db"

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Self:
        if self.ENVIRONMENT == "development":
            return self
        for name in ("ADMIN_TOKEN", "BROKER_URL", "DATABASE_URL"):
            value = getattr(self, name) or ""
            if PLACEHOLDER in value:
                raise ValueError(
                    f"{name} still holds the placeholder {PLACEHOLDER!r}; "
                    f"set a real secret before running with ENVIRONMENT={self.ENVIRONMENT}"
                )
        if not self.ADMIN_TOKEN:
            raise ValueError(f"ADMIN_TOKEN must be set when ENVIRONMENT={self.ENVIRONMENT}")
        return self


def default(name: str) -> Any:
    """The default of setting `name`, for code that takes the value as an argument."""
    return ServiceSettings.model_fields[name].default


def admin_token() -> str | None:
    """ADMIN_TOKEN as a service started here would see it (environment, then .env)."""
    return ServiceSettings(SERVICE_NAME="admin", PORT=0).ADMIN_TOKEN
