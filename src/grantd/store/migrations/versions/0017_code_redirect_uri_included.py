"""Whether an authorization request carried ``redirect_uri`` (RFC 6749 §4.1.3).

- ``authorization_codes.redirect_uri_included``: true when the request that issued the code named
  its ``redirect_uri`` (the Neucron authorize calls always do; ``/oauth2/authorize`` may omit it
  when the app registered one). The token request of ``/oauth2/token`` must then send the same
  ``redirect_uri``. NULL (a code issued before this migration): not required, as before.

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("redirect_uri_included", sa.Boolean))


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("redirect_uri_included")
