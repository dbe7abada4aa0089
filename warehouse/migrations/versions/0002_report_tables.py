"""report tables: mart_exception, mart_scorecard, delivery_log, pack_manifest (owned by reports/)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The tables are defined in ``reports.schema`` (the reports engineer's module); this migration
creates the ones that do not exist yet (``reports.schema.ensure_tables`` may have created them
on a warehouse that was not upgraded).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("mart_exception", "mart_scorecard", "delivery_log", "pack_manifest")


def upgrade() -> None:
    from reports.schema import metadata

    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    tables = [metadata.tables[name] for name in TABLES if name not in existing]
    metadata.create_all(bind, tables=tables, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for name in reversed(TABLES):
        if name in existing:
            op.drop_table(name)
