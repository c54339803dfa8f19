"""The audit log: who did what, when, from which address.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(36)),
        sa.Column("app_id", sa.String(36)),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64)),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_events_user_id_occurred_at", "audit_events", ["user_id", "occurred_at"])
    op.create_index("ix_audit_events_app_id_occurred_at", "audit_events", ["app_id", "occurred_at"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("audit_events")
