"""Analytics' read model: counts per event type and the revenue."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "analytics_0001", None, ("analytics",)


def upgrade() -> None:
    op.create_table(
        "event_counts",
        sa.Column("type", sa.String(100), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "revenue",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("total", sa.Numeric(16, 2), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revenue")
    op.drop_table("event_counts")
