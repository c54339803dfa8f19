"""Operators' accounts: who is an admin, and which accounts are locked.

- ``users.is_admin``: the account may use the admin API (``/v1/admin``) and pages (``/admin``);
  set by the operator (``grantd users grant-admin``). False for every existing account.
- ``users.locked_at``: when an admin or the operator locked the account (it cannot sign in);
  NULL: not locked.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("locked_at", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("locked_at")
        batch.drop_column("is_admin")
