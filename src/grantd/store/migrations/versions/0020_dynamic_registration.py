"""Dynamic client registration (RFC 7591, RFC 7592) and client ID metadata documents.

- ``apps``: ``registration`` (how the app came to be: NULL by its developer, ``initial_access_token``
  or ``open`` through the registration endpoint, ``metadata_document`` for a client whose id is the
  https URL of its metadata document), ``application_type`` (RFC 7591 ``web`` or ``native``),
  ``registration_access_token_hash`` (RFC 7592: the keyed hash of the token that reads, updates
  and deletes the registration) and ``metadata_document_expires_at`` (until when the fetched
  document is fresh, by its HTTP caching headers).
- ``initial_access_tokens``: RFC 7591 §3's initial access tokens, by keyed hash.
- An app's id may be the URL of its metadata document: on PostgreSQL the app id columns grow to
  255 characters (SQLite does not enforce a length), and so does ``audit_events.actor``.
- The reserved account ``self-registered`` owns the apps no developer owns; it has no password
  (its hash verifies none) and an address no one can receive mail at (RFC 6761 ``.invalid``).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

SELF_REGISTERED = "self-registered"
_APP_COLUMNS = (
    ("registration", sa.String(32)),
    ("application_type", sa.String(8)),
    ("registration_access_token_hash", sa.String(64)),
    ("metadata_document_expires_at", sa.BigInteger),
)
# The columns that hold an app id, on PostgreSQL.
_APP_ID_COLUMNS = (
    ("apps", "id"),
    ("client_assertion_jtis", "app_id"),
    ("app_keys", "app_id"),
    ("grants", "app_id"),
    ("authorization_codes", "app_id"),
    ("access_tokens", "app_id"),
    ("refresh_tokens", "app_id"),
    ("audit_events", "app_id"),
    ("pushed_authorization_requests", "app_id"),
)


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name, type_ in _APP_COLUMNS:
            batch.add_column(sa.Column(name, type_))
    op.create_table(
        "initial_access_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table, column in _APP_ID_COLUMNS:
            op.alter_column(table, column, type_=sa.String(255), existing_type=sa.String(36))
        op.alter_column("audit_events", "actor", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=False)
    users = sa.table(
        "users", sa.column("id"), sa.column("email"), sa.column("password_hash"), sa.column("created_at")
    )
    op.execute(
        users.insert().values(
            id=SELF_REGISTERED, email="self-registered@grantd.invalid", password_hash="!", created_at=0
        )
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM apps WHERE owner_id = :owner").bindparams(owner=SELF_REGISTERED))
    op.execute(sa.text("DELETE FROM users WHERE id = :owner").bindparams(owner=SELF_REGISTERED))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("audit_events", "actor", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=False)
        for table, column in reversed(_APP_ID_COLUMNS):
            op.alter_column(table, column, type_=sa.String(36), existing_type=sa.String(255))
    op.drop_table("initial_access_tokens")
    with op.batch_alter_table("apps") as batch:
        for name, _ in reversed(_APP_COLUMNS):
            batch.drop_column(name)
