"""Alembic environment: target metadata from warehouse.schema; URL or connection from the config."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from warehouse.schema import metadata

config = context.config
target_metadata: list[sa.MetaData] = [metadata]
try:  # the report tables (migration 0002) belong to reports/; autogenerate must see them too
    from reports.schema import metadata as reports_metadata

    target_metadata.append(reports_metadata)
except ImportError:  # pragma: no cover - reports not installed
    pass


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes upgrading at once must not both create the tables.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7231001)"))
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic config has neither a connection nor sqlalchemy.url")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
