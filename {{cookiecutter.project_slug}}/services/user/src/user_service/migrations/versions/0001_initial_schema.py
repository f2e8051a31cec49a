"""The user service's tables: the event store and the email index."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "user_0001", None, ("user",)


def upgrade() -> None:
    op.create_table(
        "event_store",
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.String(36), nullable=False, index=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("stream_id", "version", name="uq_stream_version"),
    )
    op.create_table(
        "user_emails",
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("user_emails")
    op.drop_table("event_store")
