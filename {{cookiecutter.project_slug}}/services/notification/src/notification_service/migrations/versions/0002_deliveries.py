"""Each email's delivery state in a table of its own, which a rebuild does not empty.

The notifications' sent_at moves there: sent rows become `sent`, unsent ones `waiting`.
"""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "notification_0002", "notification_0001"


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("failure", sa.Text()),
    )
    op.create_index("ix_deliveries_state_created_at", "deliveries", ["state", "created_at"])
    op.execute(
        "INSERT INTO deliveries"
        " (event_id, channel, recipient, subject, created_at, state, sent_at, failure)"
        " SELECT event_id, channel, recipient, subject, created_at,"
        " CASE WHEN sent_at IS NULL THEN 'waiting' ELSE 'sent' END, sent_at, NULL"
        " FROM notifications"
    )
    # Batch: SQLite drops a column by copying the table.
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.drop_index("ix_notifications_sent_at")
        batch_op.drop_column("sent_at")


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True)))
        batch_op.create_index("ix_notifications_sent_at", ["sent_at"])
    op.execute(
        "UPDATE notifications SET sent_at ="
        " (SELECT sent_at FROM deliveries WHERE deliveries.event_id = notifications.event_id)"
    )
    op.drop_table("deliveries")
