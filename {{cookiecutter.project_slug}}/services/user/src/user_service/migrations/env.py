"""Alembic environment of the user service: its models, migrated by eventkit."""

import user_service.models  # noqa: F401  (registers the tables)
from eventkit.migrations import run_env

run_env()
