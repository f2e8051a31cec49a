"""Analytics' read model: counts per event type and the revenue."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "analytics_0001", None, ("analytics",)


def upgrade() -> None:
    op.create_table(
        "event_counts",
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("type"),
    )
    op.create_table(
        "revenue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("total", sa.Numeric(precision=16, scale=2), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("revenue")
    op.drop_table("event_counts")
