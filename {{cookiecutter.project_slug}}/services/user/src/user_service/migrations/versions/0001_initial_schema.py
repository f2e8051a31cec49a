"""The user service's tables: the event store and the email index."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "user_0001", None, ("user",)


def upgrade() -> None:
    op.create_table(
        "event_store",
        sa.Column("position", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("stream_id", "version", name="uq_stream_version"),
    )
    with op.batch_alter_table("event_store", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_store_stream_id"), ["stream_id"], unique=False)
    op.create_table(
        "user_emails",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("email"),
    )
    with op.batch_alter_table("user_emails", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_emails_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_emails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_emails_user_id"))
    op.drop_table("user_emails")
    with op.batch_alter_table("event_store", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_store_stream_id"))
    op.drop_table("event_store")
