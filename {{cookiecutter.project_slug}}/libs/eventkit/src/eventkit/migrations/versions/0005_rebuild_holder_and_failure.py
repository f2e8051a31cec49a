"""The rebuild pause names its holder (only it renews or releases it) and why the read
model is not whole (a rebuild that failed or stopped midway)."""

import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels = "eventkit_0005", "eventkit_0004", None


def upgrade() -> None:
    op.add_column("consumer_pause", sa.Column("holder", sa.String(length=200), nullable=True))
    op.add_column("consumer_pause", sa.Column("failure", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumer_pause") as batch_op:
        batch_op.drop_column("failure")
        batch_op.drop_column("holder")
