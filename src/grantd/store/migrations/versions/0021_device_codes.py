"""The device authorization grant (RFC 8628).

- ``device_codes``: a device's authorization request, from ``POST /oauth2/device_authorization``
  until its device code is redeemed at the token endpoint (``redeemed_at``) or expires. Only keyed
  hashes of the device code (``device_code_hash``) and of the user code (``user_code_hash``,
  unique) are stored; the scope asked for; ``status`` (pending, approved, denied) with who decided
  (``user_id``, ``auth_time`` of their sign-in) and when (``decided_at``); the polling ``interval``
  and the device's ``last_polled_at`` (RFC 8628 §3.5 slow_down).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_codes",
        sa.Column("device_code_hash", sa.String(64), primary_key=True),
        sa.Column("user_code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("app_id", sa.String(36).with_variant(sa.String(255), "postgresql"), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("interval", sa.Integer, nullable=False),
        sa.Column("last_polled_at", sa.BigInteger),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("auth_time", sa.BigInteger),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("redeemed_at", sa.BigInteger),
    )
    op.create_index("ix_device_codes_app_id", "device_codes", ["app_id"])
    op.create_index("ix_device_codes_expires_at", "device_codes", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_device_codes_expires_at", "device_codes")
    op.drop_index("ix_device_codes_app_id", "device_codes")
    op.drop_table("device_codes")
