"""Access tokens without a row: what can end one is kept where it is decided.

- ``revoked_families``: the families (the hash of the code a token descends from, the access
  token's ``family`` claim) revoked, until the last access token they could have issued expires.
- ``revoked_access_tokens``: the jti of access tokens revoked one by one (RFC 7009), until their exp.
- ``apps.tokens_revoked_at``: an app's access tokens issued at or before it are void (set when a
  disabled app is enabled again).
- ``authorization_codes.access_jti`` / ``key_id``: what a redemption issued, for its retry; and
  an index of the codes by user and app, through which a withdrawn consent, a locked or a deleted
  account finds the families to deny.
- ``access_tokens`` (and its indexes) is dropped. Before it goes, what it knew is kept: the jti of
  its revoked, unexpired tokens go to ``revoked_access_tokens``, and the newest issue time of each
  key's and each user's grant's tokens is folded into their ``last_used_at``.

Tokens issued before the upgrade carry no ``key_id`` or ``family`` claim: until they expire
(``access_token_ttl``), a revoked key, or a family revoked after the upgrade, does not reach them
(a disabled app, an app's re-enabling and an explicit revocation still do).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-02
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_families",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.String(36), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("tokens_revoked_at", sa.BigInteger))
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("access_jti", sa.String(36)))
        batch.add_column(sa.Column("key_id", sa.String(32)))
    op.create_index("ix_authorization_codes_user_app", "authorization_codes", ["user_id", "app_id"])
    now = int(time.time())
    op.execute(
        sa.text(
            "INSERT INTO revoked_access_tokens (jti, expires_at) SELECT jti, expires_at FROM access_tokens"
            " WHERE revoked_at IS NOT NULL AND expires_at > :now"
        ).bindparams(now=now)
    )
    newest_of_key = "(SELECT max(issued_at) FROM access_tokens t WHERE t.key_id = app_keys.id)"
    op.execute(
        sa.text(
            f"UPDATE app_keys SET last_used_at = {newest_of_key}"
            f" WHERE {newest_of_key} > coalesce(last_used_at, 0)"
        )
    )
    newest_of_grant = (
        "(SELECT max(issued_at) FROM access_tokens t WHERE t.user_id = grants.user_id AND t.app_id = grants.app_id)"
    )
    op.execute(
        sa.text(
            f"UPDATE grants SET last_used_at = {newest_of_grant}"
            f" WHERE {newest_of_grant} > coalesce(last_used_at, 0)"
        )
    )
    for name in ("ix_access_tokens_code_hash", "ix_access_tokens_key_id_issued_at", "ix_access_tokens_user_app"):
        op.drop_index(name, "access_tokens")
    op.drop_table("access_tokens")


def downgrade() -> None:
    op.create_table(
        "access_tokens",
        sa.Column("jti", sa.String(36), primary_key=True),
        sa.Column("app_id", sa.String(36).with_variant(sa.String(255), "postgresql"), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("key_id", sa.String(32)),
        sa.Column("code_hash", sa.String(64)),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
        sa.Column("dpop_jkt", sa.String(43)),
        sa.Column("audience", sa.Text),
    )
    has_code, has_user = sa.text("code_hash IS NOT NULL"), sa.text("user_id IS NOT NULL")
    op.create_index("ix_access_tokens_code_hash", "access_tokens", ["code_hash"], sqlite_where=has_code, postgresql_where=has_code)
    op.create_index("ix_access_tokens_key_id_issued_at", "access_tokens", ["key_id", "issued_at"])
    op.create_index(
        "ix_access_tokens_user_app", "access_tokens", ["user_id", "app_id"], sqlite_where=has_user, postgresql_where=has_user
    )
    op.drop_index("ix_authorization_codes_user_app", "authorization_codes")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("key_id")
        batch.drop_column("access_jti")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("tokens_revoked_at")
    op.drop_table("revoked_access_tokens")
    op.drop_table("revoked_families")
