"""The portal's warehouse tables (created by migration 0010, SQLite and PostgreSQL).

- ``portal_user``: one row per account. ``role`` is ``clerk`` (one county, ``county_code``),
  ``city`` (the counties of one city, ``city_code``, read-only), ``province`` (everything,
  read-only) or ``admin`` (accounts). ``password_hash`` is an argon2id hash, never the password.
  ``auth_epoch`` grows on every reset or disable: a session carrying an older epoch is void.
- ``portal_login_failure``: one row per failed login (who was tried, from where, when): the
  throttle counts them and the log names them.
- ``portal_upload``: one row per file a clerk uploaded: its bytes are kept under
  ``$GAIBAO_HOME/portal/uploads/<upload_id>`` (never under the name the browser sent), its
  instant-check summary, and once submitted the inbox file it was written to.
- ``portal_explanation``: a clerk's explanation of a warning, keyed by the file's sha256 and row
  number: it marks the row's warnings explained exactly as a 备注 on that row does.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={"ix": "ix_%(column_0_label)s", "pk": "pk_%(table_name)s"})

ROLES = ("clerk", "city", "province", "admin")
ROLE_NAME_ZH = {
    "clerk": "县区填报员",
    "city": "市级管理员",
    "province": "省级/联席会议成员",
    "admin": "系统管理员",
}

portal_user = sa.Table(
    "portal_user",
    metadata,
    sa.Column("user_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(100)),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("county_code", sa.String(6)),
    sa.Column("city_code", sa.String(6)),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("auth_epoch", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

portal_login_failure = sa.Table(
    "portal_login_failure",
    metadata,
    sa.Column("failure_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("client", sa.String(64)),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_portal_login_failure_username", "username", "failed_at"),
)

portal_upload = sa.Table(
    "portal_upload",
    metadata,
    sa.Column("upload_id", sa.String(32), primary_key=True),
    sa.Column("county_code", sa.String(6), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("kind", sa.String(16)),
    sa.Column("file_name", sa.String(255)),  # as the browser sent it: shown (escaped), never a path
    sa.Column("file_type", sa.String(8), nullable=False),  # csv | xlsx | json, from the content
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("uploaded_by", sa.Integer, nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("warnings", sa.Integer, nullable=False),
    sa.Column("refusal", sa.Text),
    sa.Column("submitted_at", sa.DateTime(timezone=True)),
    sa.Column("submitted_by", sa.Integer),
    sa.Column("inbox_name", sa.String(255)),
    sa.Index("ix_portal_upload_county_period", "county_code", "period"),
)

portal_explanation = sa.Table(
    "portal_explanation",
    metadata,
    sa.Column("explanation_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("county_code", sa.String(6), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("explained_by", sa.Integer, nullable=False),
    sa.Column("explained_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_portal_explanation_sha256", "sha256", "row_number"),
)

PORTAL_TABLES = (portal_user, portal_login_failure, portal_upload, portal_explanation)
