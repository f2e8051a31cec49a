import pytest
from pydantic import ValidationError

from eventkit import ServiceSettings


class Settings(ServiceSettings):
    SERVICE_NAME: str = "demo"
    PORT: int = 9000


def test_development_defaults_to_sqlite_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert Settings().database_url == "sqlite+aiosqlite:///var/demo.db"


def test_a_placeholder_secret_refuses_to_start_outside_development() -> None:
    with pytest.raises(ValidationError, match="ADMIN_TOKEN still holds the placeholder"):
        Settings(ENVIRONMENT="production", ADMIN_TOKEN="changethis")


def test_production_needs_an_admin_token() -> None:
    with pytest.raises(ValidationError, match="ADMIN_TOKEN must be set"):
        Settings(ENVIRONMENT="production")
    assert Settings(ENVIRONMENT="production", ADMIN_TOKEN="s3cret").ADMIN_TOKEN == "s3cret"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("MAX_RETRIES", "5")
    settings = Settings()
    assert (settings.PORT, settings.MAX_RETRIES) == (9123, 5)
