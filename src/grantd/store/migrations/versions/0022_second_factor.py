"""A second factor at sign-in: one-time codes (RFC 6238 TOTP) and recovery codes.

- ``totp_credentials``: a user's authenticator app, one at most: its shared secret, sealed
  (AES-256-GCM under a key derived from the master secret; the server needs the secret itself
  to check a code, so it cannot be hashed), ``confirmed_at`` (NULL while enrolment waits for the
  first code typed) and ``last_step``, the RFC 6238 time-step of the last code accepted: a code
  of that step or an earlier one is refused, so a code works once.
- ``recovery_codes``: a user's single-use recovery codes, as keyed hashes; ``used_at`` once spent.
- ``amr`` of ``user_sessions``, and of ``authorization_codes``, ``refresh_tokens`` and
  ``device_codes``, which carry it from the session to the ID token as they carry ``auth_time``:
  how the person signed in (RFC 8176 values, space-separated); NULL for a password alone, as
  every row before this revision was.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_WITH_AMR = ("user_sessions", "authorization_codes", "refresh_tokens", "device_codes")


def upgrade() -> None:
    op.create_table(
        "totp_credentials",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sealed_secret", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("confirmed_at", sa.BigInteger),
        sa.Column("last_step", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger),
    )
    for table in _WITH_AMR:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("amr", sa.String(64)))


def downgrade() -> None:
    for table in reversed(_WITH_AMR):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("amr")
    op.drop_table("recovery_codes")
    op.drop_table("totp_credentials")
