"""Access tokens: index code_hash and (user_id, app_id) only where they are set.

client_credentials tokens have neither a code nor a user. Every such token wrote an entry for
NULL into both indexes, which nothing ever looks up: a token family is found by its code hash,
a user's tokens by the user. Partial indexes (``WHERE … IS NOT NULL``) leave those entries out;
a lookup by ``code_hash = …`` or ``user_id = …`` still uses them, on both databases.

On PostgreSQL the indexes are rebuilt with a plain ``CREATE INDEX``, which holds off writes to
``access_tokens`` while it reads the table: on a large table, run ``grantd migrate`` at a quiet time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PARTIAL = (
    ("ix_access_tokens_code_hash", ["code_hash"], "code_hash IS NOT NULL"),
    ("ix_access_tokens_user_app", ["user_id", "app_id"], "user_id IS NOT NULL"),
)


def upgrade() -> None:
    for name, columns, where in _PARTIAL:
        op.drop_index(name, "access_tokens")
        op.create_index(name, "access_tokens", columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, columns, _where in _PARTIAL:
        op.drop_index(name, "access_tokens")
        op.create_index(name, "access_tokens", columns)
