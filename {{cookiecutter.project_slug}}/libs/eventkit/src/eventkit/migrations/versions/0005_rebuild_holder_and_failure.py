"""The rebuild pause names its holder (only it renews or releases it) and why the read
model is not whole (a rebuild that failed or stopped midway)."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "eventkit_0005", "eventkit_0004"


def upgrade() -> None:
    op.add_column("consumer_pause", sa.Column("holder", sa.String(200)))
    op.add_column("consumer_pause", sa.Column("failure", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("consumer_pause") as batch_op:
        batch_op.drop_column("failure")
        batch_op.drop_column("holder")
