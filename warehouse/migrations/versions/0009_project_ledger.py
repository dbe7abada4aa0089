"""the project ledger (挂帐销号): ledger_state, ledger_project, ledger_exception

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-03

The ledger is rebuilt with the marts (``warehouse.ledger.rebuild`` inside
``Warehouse.rebuild_marts``). A warehouse upgraded to this revision already holds returns whose
ledger rows do not exist yet: the upgrade marks every period out of date (``mart_dirty``, period
NULL), so the next refresh, nightly or not, builds the whole ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_state",
        sa.Column("county_code", sa.String(6), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("school_name", sa.String(100)),
        sa.Column("project_type", sa.String(8)),
        sa.Column("status", sa.String(8)),
        sa.Column("planned_start", sa.Date),
        sa.Column("completed_date", sa.Date),
        sa.Column("submission_id", sa.String(20)),
        sa.PrimaryKeyConstraint(
            "county_code", "project_id", "period", "source", name=op.f("pk_ledger_state")
        ),
    )
    op.create_index("ix_ledger_state_period", "ledger_state", ["period"], unique=False)
    op.create_table(
        "ledger_project",
        sa.Column("county_code", sa.String(6), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("school_name", sa.String(100)),
        sa.Column("project_type", sa.String(8)),
        sa.Column("first_period", sa.String(7), nullable=False),
        sa.Column("last_period", sa.String(7), nullable=False),
        sa.Column("status", sa.String(8)),
        sa.Column("closed_period", sa.String(7)),
        sa.Column("closed_on", sa.Date),
        sa.Column("closed_by", sa.String(16)),
        sa.PrimaryKeyConstraint("county_code", "project_id", name=op.f("pk_ledger_project")),
    )
    op.create_table(
        "ledger_exception",
        sa.Column("county_code", sa.String(6), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("opened_period", sa.String(7), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("school_name", sa.String(100)),
        sa.Column("since_period", sa.String(7)),
        sa.Column("detail", sa.Text),
        sa.Column("closed_period", sa.String(7)),
        sa.Column("closed_by", sa.String(16)),
        sa.PrimaryKeyConstraint(
            "county_code", "project_id", "category", "opened_period", name=op.f("pk_ledger_exception")
        ),
    )
    op.create_index("ix_ledger_exception_closed_period", "ledger_exception", ["closed_period"], unique=False)
    mart_dirty = sa.table("mart_dirty", sa.column("period", sa.String), sa.column("marked_at", sa.DateTime))
    op.bulk_insert(mart_dirty, [{"period": None, "marked_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_index("ix_ledger_exception_closed_period", table_name="ledger_exception")
    op.drop_table("ledger_exception")
    op.drop_table("ledger_project")
    op.drop_index("ix_ledger_state_period", table_name="ledger_state")
    op.drop_table("ledger_state")
