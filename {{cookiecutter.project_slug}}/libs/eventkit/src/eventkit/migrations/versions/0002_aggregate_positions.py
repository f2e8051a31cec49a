"""aggregate positions: events of one aggregate apply in sequence order

Revision ID: eventkit_0002
Revises: eventkit_0001
Create Date: 2026-11-26 13:05:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "eventkit_0002"
down_revision: str | Sequence[str] | None = "eventkit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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
