"""Notification's read model: recipients and the notifications sent."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "notification_0001", None, ("notification",)


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False, index=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), index=True),
        sa.UniqueConstraint("event_id"),
    )


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("recipients")
