"""Alembic environment for gridgov.

The connection always comes from code (``gridgov.store.init_db``, or a caller that sets
``config.attributes["connection"]``); nothing here reads a URL from the environment or an ini file.
"""

from __future__ import annotations

from alembic import context

from gridgov.store.engine import compare_type, include_object
from gridgov.store.models import Base

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        msg = "gridgov migrations need a connection passed in config.attributes['connection']"
        raise RuntimeError(msg)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=compare_type,
        include_object=include_object,
        # SQLite cannot ALTER constraints in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    msg = "offline (SQL script) migrations are not supported; call gridgov.store.init_db(url)"
    raise RuntimeError(msg)
run_migrations_online()
