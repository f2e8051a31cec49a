"""Settings every service shares; each service subclasses this once, in its settings.py."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventkit.broker import DEFAULT_BROKER_URL
from eventkit.events import PRODUCERS

PLACEHOLDER = "changethis"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    SERVICE_NAME: str
    PORT: int
    HOST: str = "127.0.0.1"
    ENVIRONMENT: Literal["development", "staging", "production"] = "development"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    BROKER_URL: str = DEFAULT_BROKER_URL
    # Empty means a SQLite file of the service's own under var/.
    DATABASE_URL: str = ""

    MAX_RETRIES: int = 3
    RETRY_BACKOFF_SECONDS: float = 0.2
    RETRY_BACKOFF_MAX_SECONDS: float = 5.0
    OUTBOX_POLL_SECONDS: float = 1.0
    # After a broker outage, events sent this long before it began are sent again: a broker
    # may lose what it had not stored yet, and consumers drop the duplicates.
    OUTBOX_RESEND_SECONDS: float = 60.0
    # Spans also go to this JSON-lines file (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set).
    TRACES_FILE: str | None = None
    # Partitions per stream, where the broker has partitions.
    STREAM_PARTITIONS: int = 3

    # Where the publishers serve their event feeds, for rebuilds.
    USER_SERVICE_URL: str = "http://localhost:8001"
    BILLING_SERVICE_URL: str = "http://localhost:8004"

    # Unset in development: admin calls are open. Set it wherever others can reach the service.
    ADMIN_TOKEN: str | None = None

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite+aiosqlite:///var/{self.SERVICE_NAME}.db"

    def feed_url(self, stream: str) -> str:
        producer = PRODUCERS[stream]
        base: str = getattr(self, f"{producer.upper()}_SERVICE_URL")
        return f"{base.rstrip('/')}/events"

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


def admin_token() -> str | None:
    """ADMIN_TOKEN as a service started here would see it (environment, then .env)."""
    return ServiceSettings(SERVICE_NAME="admin", PORT=0).ADMIN_TOKEN
