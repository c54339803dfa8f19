"""Rate limits: keep the previous window's count beside the current one.

The limiter weighs the previous window's attempts by how much of it still lies within the last
``window`` seconds (a sliding window), so that a limit holds across a window boundary instead of
allowing up to twice as many attempts there. A row now carries both counts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.add_column(sa.Column("previous_count", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.drop_column("previous_count")
