"""lake_journal: the journal of loads into a remote lake (GAIBAO_LAKE_URL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

A load into a lake on an fsspec URL writes its Parquet files straight to their final paths
before the SQL commit and deletes the superseded ones after it. Its row here, committed before
the first file is written, tells the next Warehouse open (on any machine) which partitions a
killed load may have left with a file too many. A local lake keeps its journal in
lake/_journal as before and never writes here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lake_journal",
        sa.Column("load_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("partitions", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=255)),
        sa.Column("pid", sa.Integer()),
        sa.PrimaryKeyConstraint("load_id", name=op.f("pk_lake_journal")),
    )


def downgrade() -> None:
    op.drop_table("lake_journal")
