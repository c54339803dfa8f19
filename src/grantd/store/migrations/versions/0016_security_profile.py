"""An app's security profile and its refresh-token rotation (grantd's own settings).

- ``apps.security_profile``: ``fapi2`` puts the app under the FAPI 2.0 Security Profile (pushed
  requests only, PKCE S256, private_key_jwt, codes of at most 60 seconds, no rotation). NULL: none.
- ``apps.refresh_token_rotation``: false answers a refresh with the same refresh token. NULL: true
  (rotated, as before).

It follows 0014 (private_key_jwt); the two touch different columns.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_APP_COLUMNS = (
    ("security_profile", sa.String(16)),
    ("refresh_token_rotation", sa.Boolean),
)


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, type_ in _APP_COLUMNS:
            batch.add_column(sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, _ in reversed(_APP_COLUMNS):
            batch.drop_column(name)
