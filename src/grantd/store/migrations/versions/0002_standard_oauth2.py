"""Standard OAuth 2.0: public clients, PKCE, refresh tokens with families.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("client_type", sa.String(16), nullable=False, server_default="confidential"))
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("code_challenge", sa.String(128)))
    op.create_index("ix_access_tokens_user_app", "access_tokens", ["user_id", "app_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("code_hash", sa.String(64), nullable=False, index=True),
        sa.Column("app_id", sa.String(36), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("access_jti", sa.String(36), nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("rotated_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_index("ix_refresh_tokens_user_app", "refresh_tokens", ["user_id", "app_id"])


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_index("ix_access_tokens_user_app", "access_tokens")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("code_challenge")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("client_type")
