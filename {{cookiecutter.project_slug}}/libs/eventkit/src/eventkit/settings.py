"""Settings every service shares; each service subclasses this once, in its settings.py.

Every default lives here. Transport configs (KafkaConfig, RabbitMQConfig) read theirs
from this class too, through `default()`.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, Self

from pydantic import Field, model_validator
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

    SERVICE_NAME: str = Field(description="The service's name in the roster.")
    PORT: int = Field(description="Where it listens; the roster's port unless set.")
    HOST: str = Field("127.0.0.1", description="The address it listens on (0.0.0.0 in containers).")
    ENVIRONMENT: Literal["development", "staging", "production"] = Field(
        "development",
        description="Outside development, placeholder secrets and a missing ADMIN_TOKEN "
        "stop the service at start.",
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The lowest level written to the JSON log."
    )

    BROKER: BrokerKind | None = Field(
        None,
        description="Unset: the broker the project was generated for; `memory`: one process "
        "alone, no broker.",
    )
    BROKER_URL: str = Field(
        "", description="Unset: that broker on this machine (localhost:9092, or guest@localhost)."
    )
    DATABASE_URL: str = Field(
        "",
        description="Unset: a SQLite file under var/; postgresql+asyncpg://... for PostgreSQL.",
    )

    MAX_RETRIES: int = Field(
        3, description="Retries of a failing handler before its event goes to the dead letters."
    )
    RETRY_BACKOFF_SECONDS: float = Field(
        0.2, description="First retry's backoff; full-jitter, doubling per attempt."
    )
    RETRY_BACKOFF_MAX_SECONDS: float = Field(5.0, description="The longest backoff.")
    ORDER_WAIT_SECONDS: float = Field(
        60.0,
        description="How long an event waits for an earlier one of its aggregate before it is "
        "dead-lettered.",
    )
    DEAD_LETTER_TOPIC: str | None = Field(
        None,
        description="Where dead letters go (a topic or queue); unset: dlq.<service>.",
    )
    OUTBOX_POLL_SECONDS: float = Field(
        1.0, description="How often the relay looks for events a commit did not announce."
    )
    OUTBOX_RESEND_SECONDS: float = Field(
        60.0,
        description="After a broker outage, events sent this long before it began are sent "
        "again (consumers drop duplicates).",
    )
    OUTBOX_RETENTION_SECONDS: float | None = Field(
        None,
        description="Sent outbox rows older than this are pruned; unset: kept, as the outbox "
        "is the event feed rebuilds replay.",
    )
    INBOX_RETENTION_SECONDS: float = Field(
        7 * 24 * 3600.0,
        description="Inbox rows (processed event ids) older than this are pruned; keep it "
        "longer than any redelivery can come late.",
    )
    TRACES_FILE: str | None = Field(
        None,
        description="Spans also go to this JSON-lines file (OTLP when "
        "OTEL_EXPORTER_OTLP_ENDPOINT is set).",
    )
    STREAM_PARTITIONS: int = Field(
        3,
        description="Kafka: partitions of a topic this service creates.",
        json_schema_extra={"broker": "kafka"},
    )
    STREAM_REPLICATION: int = Field(
        1,
        description="Kafka: replicas of a topic this service creates.",
        json_schema_extra={"broker": "kafka"},
    )
    GROUP_ID: str | None = Field(
        None,
        description="Kafka: the consumer group; unset: the service's name.",
        json_schema_extra={"broker": "kafka"},
    )
    AUTO_OFFSET_RESET: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Kafka: where a new consumer group starts reading.",
        json_schema_extra={"broker": "kafka"},
    )
    KAFKA_ACKS: Literal["0", "1", "all"] = Field(
        "all",
        description="Kafka: replicas that must have an event before a publish counts.",
        json_schema_extra={"broker": "kafka"},
    )
    KAFKA_IDEMPOTENCE: bool = Field(
        False,
        description="Kafka: idempotent producer (real Kafka; the embedded broker refuses it).",
        json_schema_extra={"broker": "kafka"},
    )
    DEAD_LETTER_MAX_LENGTH: int = Field(
        100_000,
        description="RabbitMQ: the most dead letters a dlq.<service> queue keeps.",
        json_schema_extra={"broker": "rabbitmq"},
    )
    PREFETCH_COUNT: int = Field(
        1,
        description="RabbitMQ: unacknowledged deliveries per consumer (an aggregate's events "
        "still apply in sequence order).",
        json_schema_extra={"broker": "rabbitmq"},
    )

    ADMIN_TOKEN: str | None = Field(
        None,
        description="Bearer token of the admin calls (/dlq, rebuilds); unset: they are open.",
    )

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
