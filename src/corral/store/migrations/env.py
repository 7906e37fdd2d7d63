"""Alembic environment: runs on the connection the caller passes in ``config.attributes``."""

from alembic import context

from corral.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we never run alembic from its own CLI without one
    raise RuntimeError("corral migrations run through corral.store.db.Database.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
