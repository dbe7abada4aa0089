"""The warehouse tables (docs/ARCHITECTURE.md "The SQL tables") as SQLAlchemy Core metadata.

The tables are created only through the Alembic migrations in ``warehouse/migrations``; this
module is what the migrations were written from and what the code reads and writes through.

Unique keys agree with the validator: a project id may appear once per county and period
(the contract's "repeated within the file" rule). pandas and GX count two missing ids as
duplicates, so on PostgreSQL the constraint is ``NULLS NOT DISTINCT``; the validator already
rejects a missing id, so on SQLite (where NULLs are always distinct) no accepted row has one.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

CODE6 = sa.String(6)
PERIOD = sa.String(7)
SUBMISSION_ID = sa.String(20)

submission = sa.Table(
    "submission",
    metadata,
    sa.Column("submission_id", SUBMISSION_ID, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("county_code", CODE6, nullable=False),
    sa.Column("period", PERIOD, nullable=False),
    sa.Column("source", sa.String(200)),
    sa.Column("file_name", sa.String(500)),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True)),  # when gaibao first read the bytes
    sa.Column("status", sa.String(16), nullable=False),  # accepted | refused | superseded
    sa.Column("reason", sa.Text),
    sa.Column("rows_total", sa.Integer),
    sa.Column("rows_accepted", sa.Integer),
    sa.Column("rows_rejected", sa.Integer),
    sa.Column("rules_version", sa.String(12), nullable=False),
    sa.Column("is_late", sa.Boolean),
    sa.Column("unknown_columns", sa.Text),  # JSON list
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("load_id", sa.String(32)),
    sa.Column("file_mtime", sa.DateTime(timezone=True)),  # the time the file claims (migration 0006)
    sa.Column("refusal_code", sa.String(40)),  # a refused file's rule code (migration 0011)
    # a workbook carrying both returns: the kinds it carried, "funding,progress" (migration 0014)
    sa.Column("file_kinds", sa.String(40)),
    sa.Index("ix_submission_kind_county_period", "kind", "county_code", "period"),
    sa.Index("ix_submission_period", "period"),
    # At most one accepted submission per kind, county and period.
    sa.Index(
        "uq_submission_accepted",
        "kind",
        "county_code",
        "period",
        unique=True,
        sqlite_where=sa.text("status = 'accepted'"),
        postgresql_where=sa.text("status = 'accepted'"),
    ),
)

dq_issue = sa.Table(
    "dq_issue",
    metadata,
    # Deterministic: "<submission_id>:<n>" so that reloading a batch gives identical rows.
    sa.Column("issue_id", sa.String(32), primary_key=True),
    sa.Column("submission_id", SUBMISSION_ID, nullable=False),
    sa.Column("kind", sa.String(16)),
    sa.Column("county_code", CODE6),
    sa.Column("period", PERIOD),
    sa.Column("row_number", sa.Integer),
    sa.Column("project_id", sa.String(64)),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(8), nullable=False),
    sa.Column("column_name", sa.String(64)),
    sa.Column("value", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("is_explained", sa.Boolean),
    sa.Index("ix_dq_issue_submission_id", "submission_id"),
    sa.Index("ix_dq_issue_county_period", "county_code", "period"),
)

fact_progress = sa.Table(
    "fact_progress",
    metadata,
    sa.Column("submission_id", SUBMISSION_ID, nullable=False),
    sa.Column("row_number", sa.Integer),
    sa.Column("period", PERIOD, nullable=False),
    sa.Column("county_code", CODE6, nullable=False),
    sa.Column("school_code", sa.String(10)),
    sa.Column("school_name", sa.String(100)),
    sa.Column("project_id", sa.String(32)),
    sa.Column("project_type", sa.String(8)),
    sa.Column("status", sa.String(8)),
    sa.Column("planned_area_m2", sa.Float),
    sa.Column("started_area_m2", sa.Float),
    sa.Column("completed_area_m2", sa.Float),
    sa.Column("planned_invest_wan", sa.Float),
    sa.Column("completed_invest_wan", sa.Float),
    sa.Column("funds_central_wan", sa.Float),
    sa.Column("funds_local_wan", sa.Float),
    sa.Column("planned_start", sa.Date),
    sa.Column("actual_start", sa.Date),
    sa.Column("completed_date", sa.Date),
    sa.Column("reporter", sa.Text),  # personal data: stays in the warehouse
    sa.Column("phone", sa.Text),  # personal data: stays in the warehouse
    sa.Column("note", sa.Text),
    # Also serves lookups by (county_code, period), and so by submission: a (county, period) holds
    # the rows of its accepted submission only (warehouse.store.matching_keys). No index on
    # submission_id alone: keeping it up to date cost a national month's COPY 2-4 s (migration 0005).
    sa.Index(
        "uq_fact_progress_county_period_project",
        "county_code",
        "period",
        "project_id",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)

fact_funding = sa.Table(
    "fact_funding",
    metadata,
    sa.Column("submission_id", SUBMISSION_ID, nullable=False),
    sa.Column("row_number", sa.Integer),
    sa.Column("period", PERIOD, nullable=False),
    sa.Column("county_code", CODE6, nullable=False),
    sa.Column("funds_total_wan", sa.Float),
    sa.Column("funds_rural_infra_wan", sa.Float),
    sa.Column("funds_urban_wan", sa.Float),
    sa.Column("funds_equipment_wan", sa.Float),
    sa.Column("funds_land_wan", sa.Float),
    sa.Column("land_mu", sa.Float),
    sa.Column("teachers_recruited", sa.Integer),
    sa.Column("teachers_rural", sa.Integer),
    sa.Column("rural_teacher_subsidy_wan", sa.Float),
    sa.Index("ix_fact_funding_county_period", "county_code", "period"),
    # Also serves lookups by submission_id (its first column).
    sa.Index(
        "uq_fact_funding_submission_row",
        "submission_id",
        "row_number",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)

ref_plan = sa.Table(
    "ref_plan",
    metadata,
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("plan_cycle", sa.String(16), primary_key=True),  # '' when the plan file gives none
    sa.Column("plan_area_m2", sa.Float),
    sa.Column("plan_equipment_wan", sa.Float),
)

ref_division = sa.Table(
    "ref_division",
    metadata,
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("county_name", sa.String(64)),
    sa.Column("city_code", CODE6),
    sa.Column("city_name", sa.String(64)),
)

_PROGRESS_MEASURES = (
    sa.Column("projects_total", sa.Integer),
    sa.Column("projects_not_started", sa.Integer),
    sa.Column("projects_in_progress", sa.Integer),
    sa.Column("projects_completed", sa.Integer),
    sa.Column("planned_area_m2", sa.Float),
    sa.Column("started_area_m2", sa.Float),
    sa.Column("completed_area_m2", sa.Float),
    sa.Column("plan_area_m2", sa.Float),
    sa.Column("area_completion_rate", sa.Float),
    sa.Column("start_rate", sa.Float),
    sa.Column("completed_equipment_wan", sa.Float),
    sa.Column("plan_equipment_wan", sa.Float),
    sa.Column("equipment_completion_rate", sa.Float),
    sa.Column("planned_invest_wan", sa.Float),
    sa.Column("completed_invest_wan", sa.Float),
)

mart_county_progress = sa.Table(
    "mart_county_progress",
    metadata,
    sa.Column("period", PERIOD, primary_key=True),
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("county_name", sa.String(64)),
    sa.Column("city_code", CODE6),
    sa.Column("city_name", sa.String(64)),
    *[c._copy() for c in _PROGRESS_MEASURES],
    sa.Column("has_return", sa.Boolean, nullable=False),
    sa.Column("is_carried_forward", sa.Boolean, nullable=False),
    sa.Column("is_late", sa.Boolean),
    sa.Column("source_period", PERIOD),
    sa.Column("submission_id", SUBMISSION_ID),
)

mart_city_progress = sa.Table(
    "mart_city_progress",
    metadata,
    sa.Column("period", PERIOD, primary_key=True),
    sa.Column("level", sa.String(8), primary_key=True),  # city | province
    sa.Column("city_code", CODE6, primary_key=True),
    sa.Column("city_name", sa.String(64)),
    *[c._copy() for c in _PROGRESS_MEASURES],
    sa.Column("counties_total", sa.Integer),
    sa.Column("counties_reporting", sa.Integer),
    sa.Column("counties_carried_forward", sa.Integer),
)

mart_county_funding = sa.Table(
    "mart_county_funding",
    metadata,
    sa.Column("period", PERIOD, primary_key=True),
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("county_name", sa.String(64)),
    sa.Column("city_code", CODE6),
    sa.Column("city_name", sa.String(64)),
    sa.Column("funds_total_wan", sa.Float),
    sa.Column("funds_rural_infra_wan", sa.Float),
    sa.Column("funds_urban_wan", sa.Float),
    sa.Column("funds_equipment_wan", sa.Float),
    sa.Column("funds_land_wan", sa.Float),
    sa.Column("land_mu", sa.Float),
    sa.Column("teachers_recruited", sa.Integer),
    sa.Column("teachers_rural", sa.Integer),
    sa.Column("rural_teacher_subsidy_wan", sa.Float),
    sa.Column("has_return", sa.Boolean, nullable=False),
    sa.Column("is_carried_forward", sa.Boolean, nullable=False),
    sa.Column("is_late", sa.Boolean),
    sa.Column("source_period", PERIOD),
    sa.Column("submission_id", SUBMISSION_ID),
)

# Periods whose marts are out of date: a load marks the earliest period it touched, a reference
# table reload marks every period (period NULL), in the same transaction as the change. The mart
# rebuild starts from the earliest mark and clears the marks it saw; no mark, nothing to rebuild.
mart_dirty = sa.Table(
    "mart_dirty",
    metadata,
    sa.Column("mark_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("period", PERIOD),
    sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
)

# Per county, when the nightly run last listed its source for late corrections (tasks.corrections):
# a file of an earlier period changed since then is read; older ones are not read again.
correction_scan = sa.Table(
    "correction_scan",
    metadata,
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
)

# Per (kind, county), a late correction whose later returns are still to be re-judged: written
# once the correction is loaded, removed when the run has re-judged them (tasks.corrections), so a
# run that stops in between leaves them to the next night.
correction_pending = sa.Table(
    "correction_pending",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("from_period", PERIOD, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per committed load: the commit marker the crash recovery reads.
warehouse_load = sa.Table(
    "warehouse_load",
    metadata,
    sa.Column("load_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("submissions", sa.Integer, nullable=False),
    sa.Column("fact_rows", sa.Integer, nullable=False),
)

# One row per load into a remote lake (GAIBAO_LAKE_URL) that has not finished cleaning up: the
# journal the next Warehouse open reads, on whichever machine it runs. ``partitions`` is a JSON
# list of [period, county_code]: where the load may have written files or left superseded ones.
# Written in its own transaction before the first file, deleted once the partitions are clean.
lake_journal = sa.Table(
    "lake_journal",
    metadata,
    sa.Column("load_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("partitions", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
)

# The text of every rules version a run judged with: one row per suite file of the version
# (expectations/*.json, sorted by name; rules_version = sha256 of their bytes in that order,
# first 12 hex digits). Written by the first run that judges with a version not yet here
# (warehouse.rules.record_rules); ``gaibao rules show VERSION`` prints it.
rules_suite = sa.Table(
    "rules_suite",
    metadata,
    sa.Column("rules_version", sa.String(12), primary_key=True),
    sa.Column("file_name", sa.String(200), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),  # the file's place in the version's digest
    sa.Column("sha256", sa.String(64), nullable=False),  # of the file's bytes (UTF-8 of content)
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

FACT_TABLES: dict[str, sa.Table] = {"progress": fact_progress, "funding": fact_funding}
MART_TABLES = (mart_county_progress, mart_city_progress, mart_county_funding)

# -- the project ledger (挂帐销号; migration 0009, rebuilt with the marts by warehouse.ledger) ---
# ``source`` says which kind of return a row came from: 'progress' (the monthly return) today; a
# later list report or inspection writes its own rows beside them, and its own exception events.

# A project's state in each period a source reported it (no personal data: the allow-list below).
ledger_state = sa.Table(
    "ledger_state",
    metadata,
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("period", PERIOD, primary_key=True),
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("school_name", sa.String(100)),
    sa.Column("project_type", sa.String(8)),
    sa.Column("status", sa.String(8)),
    sa.Column("planned_start", sa.Date),
    sa.Column("completed_date", sa.Date),
    sa.Column("submission_id", SUBMISSION_ID),
    sa.Index("ix_ledger_state_period", "period"),
)

# One row per project from its first appearance: when it was ticked off (销号) and how:
# closed_by 'COMPLETED' (已竣工; closed_on = its completion date) or 'WITHDRAWN' (a later return of
# its county no longer lists it; closed_on = that month's last day). Open: closed_period NULL.
ledger_project = sa.Table(
    "ledger_project",
    metadata,
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("school_name", sa.String(100)),
    sa.Column("project_type", sa.String(8)),
    sa.Column("first_period", PERIOD, nullable=False),
    sa.Column("last_period", PERIOD, nullable=False),
    sa.Column("status", sa.String(8)),
    sa.Column("closed_period", PERIOD),
    sa.Column("closed_on", sa.Date),
    sa.Column("closed_by", sa.String(16)),
)

# Every exception put on the ledger: the month it opened and the month it closed (NULL: open),
# keyed by category. project_id is '' for a county's own exception (COUNTY_BEHIND).
# closed_by: 'RESOLVED' (the rule no longer applies), 'COMPLETED', 'WITHDRAWN'.
ledger_exception = sa.Table(
    "ledger_exception",
    metadata,
    sa.Column("county_code", CODE6, primary_key=True),
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("category", sa.String(32), primary_key=True),
    sa.Column("opened_period", PERIOD, primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("school_name", sa.String(100)),
    sa.Column("since_period", PERIOD),
    sa.Column("detail", sa.Text),  # as the rule described it when it opened
    sa.Column("closed_period", PERIOD),
    sa.Column("closed_by", sa.String(16)),
    sa.Index("ix_ledger_exception_closed_period", "closed_period"),
)

LEDGER_TABLES = (ledger_state, ledger_project, ledger_exception)
