"""drop the fact tables' indexes on submission_id alone

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

``ix_fact_progress_submission_id`` cost a national month's COPY into PostgreSQL 2-4 s of its
~11 s. The code finds a submission's fact rows by its (county_code, period) instead, the leading
columns of ``uq_fact_progress_county_period_project``: a (county, period) holds the rows of its
accepted submission only (``warehouse.store.matching_keys``). ``ix_fact_funding_submission_id``
was redundant: ``uq_fact_funding_submission_row (submission_id, row_number)`` starts with the
same column.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_fact_progress_submission_id", table_name="fact_progress")
    op.drop_index("ix_fact_funding_submission_id", table_name="fact_funding")


def downgrade() -> None:
    op.create_index("ix_fact_funding_submission_id", "fact_funding", ["submission_id"], unique=False)
    op.create_index("ix_fact_progress_submission_id", "fact_progress", ["submission_id"], unique=False)
