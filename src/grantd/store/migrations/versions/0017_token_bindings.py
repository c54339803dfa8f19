"""What a code and a refresh token remember of how they were issued.

- ``authorization_codes.redirect_uri_included``: true when the request that issued the code named
  its ``redirect_uri`` (the Neucron authorize calls always do; ``/oauth2/authorize`` may omit it
  when the app registered one). The token request of ``/oauth2/token`` must then send the same
  ``redirect_uri``. NULL (a code issued before this migration): not required, as before.
- ``refresh_tokens.key_id``: the app key that authenticated the request which issued the refresh
  token (NULL: a public client's, or one proven by a client assertion). Revoking the key ends the
  refresh token, as it ends the access tokens the key issued (``access_tokens.key_id``). Filled in
  here from the access token issued beside each refresh token, where that row is still kept.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("redirect_uri_included", sa.Boolean))
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32)))
    op.execute(
        "UPDATE refresh_tokens SET key_id = "
        "(SELECT access_tokens.key_id FROM access_tokens WHERE access_tokens.jti = refresh_tokens.access_jti)"
    )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("redirect_uri_included")
