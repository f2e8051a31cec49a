"""The pause a rebuild puts on live consumption, shared by every replica."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "eventkit_0003", "eventkit_0002"


def upgrade() -> None:
    pause = op.create_table(
        "consumer_pause",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("paused_until", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(pause, [{"id": 1, "paused_until": None}])


def downgrade() -> None:
    op.drop_table("consumer_pause")
