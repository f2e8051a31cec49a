"""Alembic environment of the analytics service: its models, migrated by eventkit."""

import analytics_service.models  # noqa: F401  (registers the tables)
from eventkit.migrations import run_env

run_env()
