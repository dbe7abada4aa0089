"""mart_dirty: the periods whose marts a load or a reference reload has put out of date

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

A warehouse upgraded from 0002 starts with no marks: its marts were rebuilt after every load.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mart_dirty",
        sa.Column("mark_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("period", sa.String(7)),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mart_dirty")
