"""Pruning expired rows: keys and grants remember their last use; the servers take turns.

A key's (or a user's grant's) last use was the newest issue time among its access tokens. Pruning
deletes expired tokens, so before it does, it folds the newest issue time of what it deletes into
``app_keys.last_used_at`` and ``grants.last_used_at``; the last use shown is the later of that
and the remaining tokens'.

``maintenance`` holds, per periodic task of the servers (``prune``), when it is next due: the
process whose upsert moves that time forward (or makes the row) runs it, so one process of a
deployment does.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("app_keys", "grants"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_used_at", sa.BigInteger))
    op.create_table(
        "maintenance",
        sa.Column("task", sa.String(40), primary_key=True),
        sa.Column("due_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("maintenance")
    for table in ("app_keys", "grants"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("last_used_at")
