"""Alembic environment of the notification service: its models, migrated by eventkit."""

import notification_service.models  # noqa: F401  (registers the tables)
from eventkit.migrations import run_env

run_env()
