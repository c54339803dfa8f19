"""Deleting an account, and the devices a person signed in from.

- The reserved account ``deleted-account`` owns the apps of deleted accounts, disabled: an app
  outlives its owner's account (the audit log and other people's consents name it) without a row
  naming the person. Like ``self-registered`` it has no password (its hash verifies none) and an
  address no one can receive mail at (RFC 6761 ``.invalid``).
- ``known_devices``: the keyed hash of each browser's device cookie a person signed in from, so
  that a sign-in from another one sends a security notice (grantd.core.notices).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

DELETED_OWNER = "deleted-account"


def upgrade() -> None:
    op.create_table(
        "known_devices",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("device_hash", sa.String(64), primary_key=True),
        sa.Column("first_seen_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False),
    )
    users = sa.table("users", sa.column("id"), sa.column("email"), sa.column("password_hash"), sa.column("created_at"))
    op.execute(users.insert().values(id=DELETED_OWNER, email="deleted-account@grantd.invalid", password_hash="!", created_at=0))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM apps WHERE owner_id = :owner").bindparams(owner=DELETED_OWNER))
    op.execute(sa.text("DELETE FROM users WHERE id = :owner").bindparams(owner=DELETED_OWNER))
    op.drop_table("known_devices")
