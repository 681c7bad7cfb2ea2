"""Alembic environment of the registry: run by ``registry.migrate`` (``osprey db``).

The caller passes an open connection in ``config.attributes["connection"]``; there
is no alembic.ini and no offline mode. SQLite gets batch mode (ALTER TABLE by copy).
"""

from __future__ import annotations

from alembic import context

from registry.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
