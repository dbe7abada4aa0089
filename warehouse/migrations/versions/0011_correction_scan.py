"""correction_scan (when the nightly run last listed each county's source for late corrections),
correction_pending (corrections whose later returns are still to be re-judged) and
submission.refusal_code

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-03

A county with no row has never been scanned: its next scan reads the window's files once and
takes those the warehouse has not seen (``tasks.corrections``). ``submission.refusal_code`` keeps
the rule code the judge gives a refused file (``OUTSIDE_WINDOW`` among them: such a file was not
judged, and a backfill of its period must judge it); rows from before the migration have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "correction_scan",
        sa.Column("county_code", sa.String(6), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("county_code", name=op.f("pk_correction_scan")),
    )
    op.create_table(
        "correction_pending",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("county_code", sa.String(6), nullable=False),
        sa.Column("from_period", sa.String(7), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "county_code", name=op.f("pk_correction_pending")),
    )
    with op.batch_alter_table("submission") as batch:
        batch.add_column(sa.Column("refusal_code", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submission") as batch:
        batch.drop_column("refusal_code")
    op.drop_table("correction_pending")
    op.drop_table("correction_scan")
