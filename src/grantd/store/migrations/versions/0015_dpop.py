"""DPoP (RFC 9449): tokens and codes bound to a client's key, the proofs already seen, and the
per-app "require DPoP" setting.

- ``access_tokens.dpop_jkt``, ``refresh_tokens.dpop_jkt``: the JWK SHA-256 thumbprint (RFC 7638)
  of the key a token is bound to (its ``cnf.jkt``, RFC 9449 §6). NULL: a bearer token.
- ``authorization_codes.dpop_jkt``: the thumbprint the authorization request bound the code to
  (``dpop_jkt``, or the DPoP proof sent to ``/oauth2/par``; RFC 9449 §10). NULL: not bound.
- ``apps.dpop_bound_access_tokens`` (RFC 9449 §5.2): refuse the app's token requests without a
  DPoP proof. NULL: not set (false).
- ``dpop_proof_jtis``: a keyed hash of each accepted proof's key and ``jti``, until the proof
  could no longer pass the ``iat`` check (RFC 9449 §11.1: a replayed proof is refused by every
  process). Used when no Redis is configured.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BOUND = ("access_tokens", "refresh_tokens", "authorization_codes")


def upgrade() -> None:
    for table in _BOUND:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("dpop_jkt", sa.String(43)))
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("dpop_bound_access_tokens", sa.Boolean))
    op.create_table(
        "dpop_proof_jtis",
        sa.Column("proof_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dpop_proof_jtis")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("dpop_bound_access_tokens")
    for table in reversed(_BOUND):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("dpop_jkt")
