"""portal tables: accounts, failed logins, uploads, explanations (portal/schema.py)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

The county information platform (``gaibao serve``) keeps its accounts and the clerks' uploads
and explanations in the warehouse, so that every portal process behind a proxy sees the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_user",
        sa.Column("user_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=100)),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("county_code", sa.String(length=6)),
        sa.Column("city_code", sa.String(length=6)),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("auth_epoch", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_portal_user")),
        sa.UniqueConstraint("username", name="uq_portal_user_username"),
    )
    op.create_table(
        "portal_login_failure",
        sa.Column("failure_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64)),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("failure_id", name=op.f("pk_portal_login_failure")),
    )
    op.create_index("ix_portal_login_failure_username", "portal_login_failure", ["username", "failed_at"])
    op.create_table(
        "portal_upload",
        sa.Column("upload_id", sa.String(length=32), nullable=False),
        sa.Column("county_code", sa.String(length=6), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("kind", sa.String(length=16)),
        sa.Column("file_name", sa.String(length=255)),
        sa.Column("file_type", sa.String(length=8), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.Integer(), nullable=False),
        sa.Column("refusal", sa.Text()),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
        sa.Column("submitted_by", sa.Integer()),
        sa.Column("inbox_name", sa.String(length=255)),
        sa.PrimaryKeyConstraint("upload_id", name=op.f("pk_portal_upload")),
    )
    op.create_index("ix_portal_upload_county_period", "portal_upload", ["county_code", "period"])
    op.create_table(
        "portal_explanation",
        sa.Column("explanation_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("county_code", sa.String(length=6), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("explained_by", sa.Integer(), nullable=False),
        sa.Column("explained_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("explanation_id", name=op.f("pk_portal_explanation")),
    )
    op.create_index("ix_portal_explanation_sha256", "portal_explanation", ["sha256", "row_number"])


def downgrade() -> None:
    op.drop_index("ix_portal_explanation_sha256", table_name="portal_explanation")
    op.drop_table("portal_explanation")
    op.drop_index("ix_portal_upload_county_period", table_name="portal_upload")
    op.drop_table("portal_upload")
    op.drop_index("ix_portal_login_failure_username", table_name="portal_login_failure")
    op.drop_table("portal_login_failure")
    op.drop_table("portal_user")
