"""Aggregate positions, so each aggregate's events apply in sequence order."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "eventkit_0002", "eventkit_0001", None


def upgrade() -> None:
    op.create_table(
        "aggregate_positions",
        sa.Column("stream", sa.String(length=200), nullable=False),
        sa.Column("aggregate_id", sa.String(length=200), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "aggregate_id"),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_processed_at", "inbox")
    op.drop_table("aggregate_positions")
