"""eventkit's tables: outbox, inbox and dead letters (branch `eventkit`).

Columns are NOT NULL only where said (a primary key always is); `index=True` makes the
index `ix_<table>_<column>`."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "eventkit_0001", None, ("eventkit",)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), index=True),
        sa.Column("headers", sa.Text()),
        sa.UniqueConstraint("event_id"),
    )
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), index=True),
        sa.Column("event_type", sa.String(100)),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("inbox")
    op.drop_table("outbox")
