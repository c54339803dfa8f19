"""Pushed authorization requests (RFC 9126).

- ``pushed_authorization_requests``: a request a client pushed to ``POST /oauth2/par``, until its
  ``request_uri`` is used at ``/oauth2/authorize`` (``spent_at``) or expires. Only the keyed hash of
  the ``request_uri``'s random part is stored (``request_hash``), the parameters as a JSON object,
  the client it is bound to (``app_id``), and when a browser first brought it to the authorization
  endpoint (``opened_at``).
- ``apps.require_pushed_authorization_requests`` (RFC 9126 §6): refuse this app's authorization
  requests that were not pushed first. NULL: not set (false).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pushed_authorization_requests",
        sa.Column("request_hash", sa.String(64), primary_key=True),
        sa.Column("app_id", sa.String(36), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("opened_at", sa.BigInteger),
        sa.Column("spent_at", sa.BigInteger),
    )
    op.create_index("ix_pushed_authorization_requests_app_id", "pushed_authorization_requests", ["app_id"])
    op.create_index("ix_pushed_authorization_requests_expires_at", "pushed_authorization_requests", ["expires_at"])
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("require_pushed_authorization_requests", sa.Boolean))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("require_pushed_authorization_requests")
    op.drop_index("ix_pushed_authorization_requests_expires_at", "pushed_authorization_requests")
    op.drop_index("ix_pushed_authorization_requests_app_id", "pushed_authorization_requests")
    op.drop_table("pushed_authorization_requests")
