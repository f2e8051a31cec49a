"""Aggregate positions, so each aggregate's events apply in sequence order."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "eventkit_0002", "eventkit_0001"


def upgrade() -> None:
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])
    op.create_table(
        "aggregate_positions",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("aggregate_id", sa.String(200), primary_key=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("aggregate_positions")
    op.drop_index("ix_inbox_processed_at", "inbox")
