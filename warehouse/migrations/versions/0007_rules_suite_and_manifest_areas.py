"""rules_suite: the text of every rules version used; pack_manifest.area_figures

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

A submission records the ``rules_version`` it was judged with (sha256 of the suite files, first
12 hex digits); until now the text behind a version could only be found in git history.
``rules_suite`` keeps it, one row per suite file, written by the first run that judges with a
version not yet there. ``pack_manifest.area_figures`` holds the city and province figures of a
pack (JSON), beside the county figures it already held.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rules_suite",
        sa.Column("rules_version", sa.String(length=12), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rules_version", "file_name", name=op.f("pk_rules_suite")),
    )
    # 0002 creates pack_manifest from reports.schema as it is now (with the column): add it only
    # to a table created before
    if "area_figures" not in _columns("pack_manifest"):
        with op.batch_alter_table("pack_manifest") as batch_op:
            batch_op.add_column(sa.Column("area_figures", sa.Text(), nullable=True))


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def downgrade() -> None:
    if "area_figures" in _columns("pack_manifest"):
        with op.batch_alter_table("pack_manifest") as batch_op:
            batch_op.drop_column("area_figures")
    op.drop_table("rules_suite")
