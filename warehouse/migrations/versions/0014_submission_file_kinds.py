"""submission.file_kinds: the kinds of a workbook that carried both returns

Revision ID: 0014
Revises: 0009
Create Date: 2026-12-03

A workbook with a sheet named 进展 and one named 资金 is two submissions (one per kind, the same
sha256). Each records the kinds its file carried (``funding,progress``); a file of one return
leaves it null. A run takes such a file as already judged only once every kind it carried is
recorded under the current rules, so a run that failed or was killed between loading the two
kinds loads the missing one the next night instead of dropping it for good.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN on both dialects (SQLite too: no table rebuild for a nullable column)
    op.add_column("submission", sa.Column("file_kinds", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submission") as batch:
        batch.drop_column("file_kinds")
