"""A position opened at an aggregate's first event seen (not its #1) is tentative for a
while; an aggregate whose event is held (a type or version not known yet) waits for it."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "eventkit_0004", "eventkit_0003"


def upgrade() -> None:
    # Rows already there are positions that stand: both columns stay empty.
    op.add_column("aggregate_positions", sa.Column("opening_until", sa.DateTime(timezone=True)))
    op.add_column("aggregate_positions", sa.Column("held_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("aggregate_positions") as table:
        table.drop_column("held_until")
        table.drop_column("opening_until")
