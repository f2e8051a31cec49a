"""Settings every service shares; each service subclasses this once, in its settings.py.

Every default lives here, but the broker's: its adapter owns those (`KafkaSettings` in
transports/kafka.py, `RabbitMQSettings` in transports/rabbitmq.py, `SqsSettings` in
transports/sqs.py), read from the same
environment, so a project carries only its own broker's. Transport configs read their
defaults through `default()`.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER = "changethis"
BrokerKind = Literal["kafka", "rabbitmq", "sqs", "memory"]


def shipped_broker() -> BrokerKind:
    """The broker this project was generated for: the one real adapter it ships."""
    real: tuple[BrokerKind, ...] = ("kafka", "rabbitmq", "sqs")
    for kind in real:
        if importlib.util.find_spec(f"eventkit.transports.{kind}") is not None:
            return kind
    return "memory"


# Where settings come from, for ServiceSettings and the broker's own settings alike.
SETTINGS_SOURCES = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")


class ServiceSettings(BaseSettings):
    model_config = SETTINGS_SOURCES

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
        "",
        description="Where the broker answers; unset: the default shown, this project's "
        "broker on this machine (memory:// with BROKER=memory).",
        json_schema_extra={"default_from": "LOCAL_URL"},
    )
    DATABASE_URL: str = Field(
        "",
        description="Unset: a SQLite file under var/; postgresql+asyncpg://... for PostgreSQL.",
    )

    DATABASE_COMMAND_TIMEOUT_SECONDS: float = Field(
        60.0,
        gt=0,
        description="A database statement that waits (for a lock) or runs longer than this "
        "fails, so a stuck server holds nothing for ever.",
    )

    MAX_REQUEST_BODY_BYTES: int = Field(
        1_048_576,
        ge=1,
        description="A request body above this many bytes gets 413 before it is read.",
    )

    MAX_RETRIES: int = Field(
        5,
        description="Delayed retries of a failing event before it goes to the dead letters.",
    )
    RETRY_DELAYS_SECONDS: Annotated[tuple[float, ...], NoDecode] = Field(
        (1.0, 5.0, 30.0, 120.0, 300.0),
        description="Wait before retry 1, 2, ... (comma-separated; the last repeats). A "
        "waiting event leaves its stream free; an event whose aggregate's earlier event has "
        "not arrived waits the same way.",
    )
    FIRST_EVENT_WAIT_SECONDS: float = Field(
        30.0,
        ge=0,
        description="An aggregate's first event a consumer sees, when it is not the "
        "aggregate's #1, waits this long for earlier ones still on their way; then its "
        "position opens there (the earlier ones predate the consumer).",
    )
    UNKNOWN_EVENT_HOLD_SECONDS: float = Field(
        86400.0,
        ge=0,
        description="An event of a type or version a consumer does not know yet (its "
        "publisher was deployed first) is listed in the dead letters at once and retried "
        "this long, its aggregate's later events waiting with it, before it stays there.",
    )
    CONSUMER_BATCH_SIZE: int = Field(
        200, description="The most events a consumer applies in one transaction."
    )
    CONSUMER_BATCH_WAIT_MS: int = Field(
        5,
        description="How long a consumer waits for a batch to fill once its first event is in.",
    )
    DEAD_LETTER_TOPIC: str | None = Field(
        None,
        description="Where dead letters go (a topic or queue); unset: dlq.<service>.",
    )
    OUTBOX_POLL_SECONDS: float = Field(
        1.0, description="How often the relay looks for events a commit did not announce."
    )
    RELAY_BATCH_SIZE: int = Field(
        500,
        ge=1,
        description="The most outbox events the relay has in flight at once; they are marked "
        "sent together.",
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
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = Field(
        None,
        description="Spans go to this OTLP/HTTP collector (e.g. http://jaeger:4318); unset: "
        "none leave the service.",
    )
    TRACES_FILE: str | None = Field(
        None,
        description="Spans also go to this JSON-lines file; unset: no file is written.",
    )
    TRACE_SAMPLE_RATIO: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces kept (by trace id); a span follows its parent's "
        "decision, so a trace is whole or absent. OTEL_TRACES_SAMPLER overrides it.",
    )
    ADMIN_TOKEN: str | None = Field(
        None,
        description="Bearer token of the admin calls (/dlq, rebuilds); unset: they are open.",
    )

    @field_validator("RETRY_DELAYS_SECONDS", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("RETRY_DELAYS_SECONDS")
    @classmethod
    def _some_positive_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("give one or more delays in seconds, none negative, like 1,5,30")
        return value

    @property
    def broker(self) -> BrokerKind:
        return self.BROKER or shipped_broker()

    @property
    def broker_url(self) -> str:
        return self.BROKER_URL or local_broker_url(self.broker)

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


def default(name: str, settings: type[BaseSettings] = ServiceSettings) -> Any:
    """The default of setting `name`, for code that takes the value as an argument."""
    return settings.model_fields[name].default


def local_broker_url(broker: BrokerKind) -> str:
    """Where `broker` answers on a developer's machine (its adapter's LOCAL_URL)."""
    adapter = importlib.import_module(f"eventkit.transports.{broker}")
    return str(adapter.LOCAL_URL)


def admin_token() -> str | None:
    """ADMIN_TOKEN as a service started here would see it (environment, then .env)."""
    return ServiceSettings(SERVICE_NAME="admin", PORT=0).ADMIN_TOKEN
