"""Which of an aggregate's events is held: its hold lifts once that event applies or a
deploy knows it, and the held event itself never waits for its own hold."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "eventkit_0006", "eventkit_0005"


def upgrade() -> None:
    # Rows already held keep holding every later event until their hold ends, as before.
    op.add_column("aggregate_positions", sa.Column("held_sequence", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("aggregate_positions") as table:
        table.drop_column("held_sequence")
