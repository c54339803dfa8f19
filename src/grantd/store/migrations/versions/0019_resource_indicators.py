"""RFC 8707 resource indicators: the resources a grant was authorized for, the audience of each
access token, and the resources an operator registers.

- ``authorization_codes.resources``, ``refresh_tokens.resources``: the ``resource`` values the
  authorization request named, space-separated (NULL: none, the grant is bound to no resource);
  a refresh token carries its code's, so that a refresh may narrow to one and never widen.
- ``access_tokens.audience``: the token's ``aud`` when it was issued for a resource (NULL: the
  server's audience), so that a token re-sent within a grace window keeps it.
- ``resources``: the registered resources (``GRANTD_RESOURCE_POLICY=registered``): the URI and the
  permissions it accepts.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("authorization_codes", "resources"),
    ("refresh_tokens", "resources"),
    ("access_tokens", "audience"),
)


def upgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, sa.Text))
    op.create_table(
        "resources",
        sa.Column("uri", sa.String(2048), primary_key=True),
        sa.Column("permissions", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("resources")
    for table, column in reversed(_COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
