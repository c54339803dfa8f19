"""Alembic environment: runs on the connection that grantd.store.migrate hands in."""

from alembic import context

from grantd.store.schema import ddl_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=ddl_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
