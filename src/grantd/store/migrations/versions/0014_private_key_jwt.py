"""RFC 7523 private_key_jwt client authentication: an app's registered method and its keys, and
the assertions already used.

- ``apps``: ``token_endpoint_auth_method`` (RFC 7591 §2: client_secret_basic, client_secret_post,
  private_key_jwt or none; NULL: derived from ``client_type``), ``jwks`` (a JWK Set of public keys,
  JSON) and ``jwks_uri`` (where the app publishes one). NULL: not set.
- ``client_assertion_jtis``: the ``jti`` of every assertion accepted, per app, until its ``exp``
  (RFC 7523 §3 item 7: a replayed assertion is refused, by every process of the deployment). Rows
  past ``expires_at`` are deleted as the app's next assertion is recorded.

It follows 0013 (pushed authorization requests); the two touch different columns and tables.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_APP_COLUMNS = (
    ("token_endpoint_auth_method", sa.String(32)),
    ("jwks", sa.Text),
    ("jwks_uri", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, type_ in _APP_COLUMNS:
            batch.add_column(sa.Column(name, type_))
    op.create_table(
        "client_assertion_jtis",
        sa.Column("app_id", sa.String(36), sa.ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("client_assertion_jtis")
    with op.batch_alter_table("apps") as batch:
        for name, _ in reversed(_APP_COLUMNS):
            batch.drop_column(name)
