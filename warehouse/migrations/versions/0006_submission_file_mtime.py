"""submission.file_mtime: the time the county's file claims, kept beside received_at

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``received_at`` is when gaibao first read the bytes; it decides newest-wins and lateness. The
file's own modification time (or an HTTP platform's ``Last-Modified``) is only what the county's
file claims: a file dated 2099 superseded every later correction while it was ``received_at``.
It is kept here for the record. Rows loaded before this revision keep their ``received_at``
(then the mtime) and have no ``file_mtime``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN on both dialects (SQLite too: no table rebuild for a nullable column)
    op.add_column("submission", sa.Column("file_mtime", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submission") as batch:
        batch.drop_column("file_mtime")
