"""An app's branding: what the hosted pages and the v2 client-info show about it.

Eight nullable columns on ``apps``, named as RFC 7591 (OAuth 2.0 Dynamic Client Registration)
§2 names client metadata where it has a name: ``logo_uri``, ``client_uri`` (the app's
website), ``tos_uri`` (its terms), ``policy_uri`` (its privacy policy); and ``description``,
``domain``, ``accent_color`` (``#rgb`` or ``#rrggbb``) and ``theme`` (``light`` or ``dark``).
NULL: not set. The values are checked by ``grantd.core.apps`` before they are stored.

It follows 0008 (the users' profile); the two touch different tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("logo_uri", sa.Text),
    ("client_uri", sa.Text),
    ("tos_uri", sa.Text),
    ("policy_uri", sa.Text),
    ("description", sa.Text),
    ("domain", sa.String(253)),
    ("accent_color", sa.String(7)),
    ("theme", sa.String(5)),
)


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
