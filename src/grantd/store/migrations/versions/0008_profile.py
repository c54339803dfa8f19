"""A person's profile on the user: names, a unique user name, avatar, phone, language.

Every column is nullable: an account made before this revision, or by the v1 sign-up, has no
profile until its owner writes one. ``user_name_key`` is the user name in lower case, and the
unique index is on it, so that ``Ada`` and ``ada`` cannot both be taken, on SQLite and PostgreSQL
alike (NULLs do not collide in either). ``updated_at`` is when the profile last changed (OpenID
Connect's ``updated_at`` claim); existing accounts start at their creation time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("first_name", sa.String(100)),
    ("last_name", sa.String(100)),
    ("user_name", sa.String(32)),
    ("user_name_key", sa.String(32)),
    ("avatar", sa.String(2048)),
    ("phone_number", sa.String(16)),
    ("language", sa.String(35)),
    ("updated_at", sa.BigInteger),
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_))
    op.execute("UPDATE users SET updated_at = created_at")
    op.create_index("ux_users_user_name_key", "users", ["user_name_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_users_user_name_key", table_name="users")
    with op.batch_alter_table("users") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
