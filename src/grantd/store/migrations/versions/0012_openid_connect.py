"""OpenID Connect: what an authorization carries into its ID tokens, and an app's OpenID settings.

- ``authorization_codes``: ``nonce`` (echoed in the ID token), ``auth_time`` (when the user
  signed in to the browser session that approved it) and ``session_jti`` (that session, when the
  grant is to end with it: an OpenID request without ``offline_access``).
- ``refresh_tokens``: ``auth_time`` and ``session_jti``, carried from the code to every rotation,
  so that a refreshed ID token keeps the original ``auth_time`` and a logout ends the family.
- ``apps``: the OpenID Connect Dynamic Client Registration 1.0 §2 settings, by their names:
  ``post_logout_redirect_uris`` (a JSON array of exact URIs), ``id_token_signed_response_alg``
  (RS256 or ES256; NULL: RS256), ``subject_type`` (public or pairwise; NULL: public),
  ``sector_identifier_uri``; and ``require_nonce`` (grantd's own: refuse an OpenID request
  without a nonce). NULL: not set.

It follows 0011 (email verification); the two touch different columns.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_APP_COLUMNS = (
    ("post_logout_redirect_uris", sa.Text),
    ("id_token_signed_response_alg", sa.String(8)),
    ("subject_type", sa.String(8)),
    ("sector_identifier_uri", sa.Text),
    ("require_nonce", sa.Boolean),
)


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("nonce", sa.Text))
        batch.add_column(sa.Column("auth_time", sa.BigInteger))
        batch.add_column(sa.Column("session_jti", sa.String(36)))
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("auth_time", sa.BigInteger))
        batch.add_column(sa.Column("session_jti", sa.String(36)))
    op.create_index(
        "ix_refresh_tokens_session_jti", "refresh_tokens", ["session_jti"],
        sqlite_where=sa.text("session_jti IS NOT NULL"), postgresql_where=sa.text("session_jti IS NOT NULL"),
    )
    with op.batch_alter_table("apps") as batch:
        for name, type_ in _APP_COLUMNS:
            batch.add_column(sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, _ in reversed(_APP_COLUMNS):
            batch.drop_column(name)
    op.drop_index("ix_refresh_tokens_session_jti", "refresh_tokens")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("session_jti")
        batch.drop_column("auth_time")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("session_jti")
        batch.drop_column("auth_time")
        batch.drop_column("nonce")
