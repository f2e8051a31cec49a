"""Alembic environment of the billing service: its models, migrated by eventkit."""

import billing_service.models  # noqa: F401  (registers the tables)
from eventkit.migrations import run_env

run_env()
