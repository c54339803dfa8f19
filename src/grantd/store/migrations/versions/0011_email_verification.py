"""Email verification: ``users.email_verified_at`` (when the account's address was last proven by a
link sent to it; NULL: not proven), and ``email_tokens.email``, the address a link proves (a
verification link: the account's address when it was sent; an email change: the new address).

``grantd.core.email_address`` holds the rules.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_verified_at", sa.BigInteger))
    with op.batch_alter_table("email_tokens") as batch:
        batch.add_column(sa.Column("email", sa.String(320)))


def downgrade() -> None:
    with op.batch_alter_table("email_tokens") as batch:
        batch.drop_column("email")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_at")
