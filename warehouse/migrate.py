"""Run the Alembic migrations programmatically (works from any cwd and from an installed package)."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str, connection: sa.Connection | None = None) -> Config:
    """An Alembic config built in code: script location inside the package, the given URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: str | sa.Engine, revision: str = "head") -> None:
    """``alembic upgrade head`` against ``url`` (a SQLAlchemy URL or engine)."""
    if isinstance(url, sa.Engine):
        with url.begin() as conn:
            command.upgrade(alembic_config(url.url.render_as_string(hide_password=False), conn), revision)
        return
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
