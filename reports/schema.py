"""The report marts and logs as SQLAlchemy Core tables (public SQL interface of reports/).

- ``mart_exception``: one row per exception of a period (category, county, project when it
  concerns one), with ``since_period``, the first period it was seen without a break.
- ``mart_scorecard``: one row per county and period: score, ranks, points per component.
- ``delivery_log``: one row per message sent (message key + recipient), so reruns send nothing twice.
- ``pack_manifest``: one row per pack build: the submissions its figures came from and a digest.

Alembic owns the schema in production (a migration creates these tables);
:func:`ensure_tables` creates any that are missing, for a warehouse not yet upgraded.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

mart_exception = sa.Table(
    "mart_exception",
    metadata,
    sa.Column("exception_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("period", sa.String(7), nullable=False, index=True),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("county_code", sa.String(6), nullable=False),
    sa.Column("city_code", sa.String(6)),
    sa.Column("project_id", sa.String(32)),
    sa.Column("school_name", sa.Text),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("since_period", sa.String(7), nullable=False),
)

mart_scorecard = sa.Table(
    "mart_scorecard",
    metadata,
    sa.Column("period", sa.String(7), primary_key=True),
    sa.Column("county_code", sa.String(6), primary_key=True),
    sa.Column("city_code", sa.String(6)),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("rank_in_city", sa.Integer),
    sa.Column("rank_in_province", sa.Integer),
    sa.Column("points_area_completion", sa.Float),
    sa.Column("points_equipment_completion", sa.Float),
    sa.Column("points_start_rate", sa.Float),
    sa.Column("points_timeliness", sa.Float),
    sa.Column("points_data_quality", sa.Float),
    sa.Column("points_overdue_stalled", sa.Float),
    sa.Column("score_change", sa.Float),
)

delivery_log = sa.Table(
    "delivery_log",
    metadata,
    sa.Column("delivery_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_key", sa.String(200), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("period", sa.String(7)),
    sa.Column("kind", sa.String(16), nullable=False),  # pack | letter | receipt
    sa.Column("county_code", sa.String(6)),
    sa.Column("subject", sa.Text),
    sa.Column("transport", sa.String(16)),  # smtp | outbox
    sa.Column("location", sa.Text),  # the .eml path for the outbox
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resent", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_delivery_log_key_recipient", "message_key", "recipient"),
)

pack_manifest = sa.Table(
    "pack_manifest",
    metadata,
    sa.Column("manifest_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("period", sa.String(7), nullable=False, index=True),
    sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("pack_digest", sa.String(64), nullable=False),  # sha256 of submissions + figures
    sa.Column("figures_sha256", sa.String(64), nullable=False),
    sa.Column("submissions", sa.Text, nullable=False),  # JSON [{submission_id, kind, county_code, sha256}]
    sa.Column("figures", sa.Text, nullable=False),  # JSON {county_code: {measure: value}}
    # JSON {level: {code: {"name", "counties", "submissions", "figures": {measure: value}}}}, level
    # city | province (migration 0007; null in manifests stored before)
    sa.Column("area_figures", sa.Text),
    sa.Column("output_dir", sa.Text),
)

REPORT_TABLES = (mart_exception, mart_scorecard, delivery_log, pack_manifest)


def ensure_tables(engine: sa.Engine) -> None:
    """Create the report tables that do not exist yet (no-op after the Alembic migration)."""
    metadata.create_all(engine, tables=list(REPORT_TABLES), checkfirst=True)
