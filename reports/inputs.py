"""What the pack reads from the warehouse, as plain DataFrames.

:class:`PackInputs` is the only thing the marts and the pack need; :func:`load_inputs` fills it
from a warehouse (SQLAlchemy engine, bound parameters only). Tests build it from tiny frames.
Personal columns (reporter, phone) are never read: the fact columns are an allow-list.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from gaibao.contract import personal_columns
from reports import periods
from tasks.judge import ISSUE_COLUMNS as _JUDGED_ISSUE_COLUMNS

log = logging.getLogger(__name__)

# The fact_progress columns the reports use (an allow-list: personal data is never read). Only
# what the exceptions, the 公示 and the letters use: every column read costs time on a national
# month (≈1,000,000 rows in 2,850 files).
FACT_COLUMNS: tuple[str, ...] = (
    "period",
    "county_code",
    "school_name",
    "project_id",
    "project_type",
    "status",
    "planned_area_m2",
    "completed_area_m2",
    "planned_invest_wan",
    "completed_invest_wan",
    "planned_start",
    "actual_start",
    "completed_date",
)
assert not set(FACT_COLUMNS) & personal_columns()

SUBMISSION_COLUMNS: tuple[str, ...] = (
    "submission_id",
    "kind",
    "county_code",
    "period",
    "source",
    "file_name",
    "sha256",
    "received_at",
    "status",
    "reason",
    "rows_total",
    "rows_accepted",
    "rows_rejected",
    "is_late",
)

ISSUE_COLUMNS: tuple[str, ...] = tuple(_JUDGED_ISSUE_COLUMNS)  # dq_issue as the judge writes it


def _empty(columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class PackInputs:
    """Every frame the marts and the pack are computed from, for one period."""

    period: str
    divisions: pd.DataFrame  # county_code, county_name, city_code, city_name
    county_progress: pd.DataFrame  # mart_county_progress, this period and the previous one
    city_progress: pd.DataFrame  # mart_city_progress, this period and the previous one
    county_funding: pd.DataFrame  # mart_county_funding, this period
    facts: pd.DataFrame  # fact_progress (FACT_COLUMNS), the history window ending at period
    submissions: pd.DataFrame  # submission rows of this period (every status)
    issues: pd.DataFrame  # dq_issue rows of this period
    expected_counties: list[str] = field(default_factory=list)
    prior_exceptions: pd.DataFrame = field(default_factory=lambda: _empty(["category", "county_code"]))
    prior_scorecard: pd.DataFrame = field(default_factory=lambda: _empty(["county_code", "score"]))
    # the submissions the figures came from (this period's accepted ones and the carried-forward
    # ones named by mart_county_progress.submission_id); derived from ``submissions`` when None
    source_submissions: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        periods.check_period(self.period)
        if not self.expected_counties:
            cur = self.county_progress
            codes = (
                set(cur.loc[cur["period"] == self.period, "county_code"].astype(str)) if len(cur) else set()
            )
            self.expected_counties = sorted(codes)
        if self.source_submissions is None:
            subs = self.submissions
            acc = (
                subs[(subs["period"] == self.period) & (subs["status"] == "accepted")] if len(subs) else subs
            )
            self.source_submissions = acc.reindex(
                columns=["submission_id", "kind", "county_code", "period", "sha256"]
            )


def _has_table(engine: sa.Engine, name: str) -> bool:
    return sa.inspect(engine).has_table(name)


def _read(engine: sa.Engine, sql: str, params: dict, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(sql), conn, params=params)
    if columns is not None and frame.empty:
        return _empty(list(frame.columns) or list(columns))
    return frame


def _in_periods(column: str, names: list[str]) -> tuple[str, dict]:
    """An ``IN`` clause over periods with one bound parameter per value."""
    params = {f"p{i}": p for i, p in enumerate(names)}
    return f"{column} IN ({', '.join(':' + k for k in params)})", params


# The columns the project-history exceptions need from earlier periods (reading fewer is faster).
HISTORY_READ_COLUMNS: tuple[str, ...] = (
    "county_code",
    "project_id",
    "period",
    "status",
    "planned_start",
    "completed_area_m2",
    "completed_invest_wan",
)


# Columns that are the same on every row of a lake file (its partition): taken from the path's
# submission row instead of being decoded from each of thousands of small files.
PARTITION_COLUMNS: tuple[str, ...] = ("period", "county_code")


def _read_lake_files(files: list[tuple[str, str, Any]], schema: pa.Schema, lake: Any) -> pa.Table:
    """``schema``'s columns of many small lake files, in order, as one Arrow table.

    ``files`` are (period, county_code, path). The partition columns are not read from the files
    but rebuilt from ``files`` (one dictionary-encoded array, then cast), which saves decoding two
    columns in each of thousands of files. A few threads of single-threaded reads: measured
    faster than a ``pyarrow.dataset`` scan on files of a few hundred rows. The lake opens each
    file (a local path, or one request to a remote lake); a remote lake reads in more threads
    (each read waits on the network).
    """
    read_names = [n for n in schema.names if n not in PARTITION_COLUMNS]
    read_schema = pa.schema([schema.field(n) for n in read_names])
    if not files:
        return schema.empty_table()

    def one(path: Any) -> pa.Table:
        return (
            lake.open_parquet(path, pre_buffer=False)
            .read(columns=read_names, use_threads=False)
            .cast(read_schema)
        )

    threads = min(4, os.cpu_count() or 1) if lake.is_local else lake.threads
    if len(files) < 8:
        parts = [one(f[2]) for f in files]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(one, [f[2] for f in files]))
    table = pa.concat_tables(parts)
    counts = np.fromiter((t.num_rows for t in parts), dtype=np.int64, count=len(parts))
    for i, name in enumerate(PARTITION_COLUMNS):
        values = [f[i] for f in files]
        uniques, codes = np.unique(np.asarray(values, dtype=object), return_inverse=True)
        column = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(codes.astype(np.int32), counts)), pa.array(uniques.tolist(), pa.string())
        ).cast(schema.field(name).type)
        table = table.append_column(schema.field(name), column)
    return table.select(schema.names)


def _facts_from_lake(warehouse: Any, engine: sa.Engine, period: str, names: list[str]) -> pd.DataFrame | None:
    """The accepted progress facts of ``names`` (periods) from the warehouse's Parquet lake:
    every report column for ``period``, the history columns for the earlier ones.

    One small file per county and period: far faster than SQL for a national month. Returns
    None (the caller reads SQL) when the warehouse has no lake or a file is missing.
    """
    lake = getattr(warehouse, "lake", None)
    if lake is None:
        return None
    try:
        from warehouse.lake import arrow_schema
        from warehouse.schema import fact_progress
    except ImportError:
        return None
    where, params = _in_periods("period", names)
    subs = _read(
        engine,
        "SELECT county_code, period, submission_id FROM submission"
        f" WHERE kind = 'progress' AND status = 'accepted' AND {where} ORDER BY period, county_code",
        params,
    )
    now: list[tuple[str, str, Any]] = []
    before: list[tuple[str, str, Any]] = []
    for c, p, sid in subs.itertuples(index=False, name=None):
        (now if p == period else before).append((p, c, lake.file_path("progress", p, c, sid)))
    # A local lake is checked first; a remote one is not asked twice per file: a missing file
    # shows when it is read.
    if lake.is_local and not all(f[2].is_file() for f in now + before):
        log.warning("lake files missing: reading the facts from SQL")
        return None
    full = arrow_schema(fact_progress)
    schema = pa.schema([full.field(n) for n in FACT_COLUMNS])
    hist_schema = pa.schema([full.field(n) for n in FACT_COLUMNS if n in HISTORY_READ_COLUMNS])
    try:
        current = _read_lake_files(now, schema, lake)
        history = _read_lake_files(before, hist_schema, lake)
    except FileNotFoundError:
        log.warning("lake files missing: reading the facts from SQL")
        return None
    # one Arrow concat (history rows get nulls in the report-only columns), one pandas conversion
    table = pa.concat_tables([history, current], promote_options="default") if history.num_rows else current
    return table.select(list(FACT_COLUMNS)).to_pandas(date_as_object=False)


def load_inputs(source: Any, period: str, history_periods: int = 6) -> PackInputs:
    """Read the frames of one period's pack from a warehouse (a ``Warehouse`` or an engine).

    Facts come from the warehouse's Parquet lake when it has one, else from ``fact_progress``.
    """
    engine: sa.Engine = source if isinstance(source, sa.Engine) else source.engine
    periods.check_period(period)
    prev = periods.previous(period)
    two, two_params = _in_periods("period", [prev, period])
    hist, hist_params = _in_periods("period", periods.window(period, history_periods))
    one = {"period": period}

    divisions = _read(engine, "SELECT county_code, county_name, city_code, city_name FROM ref_division", {})
    county_progress = _read(engine, f"SELECT * FROM mart_county_progress WHERE {two}", two_params)
    city_progress = _read(engine, f"SELECT * FROM mart_city_progress WHERE {two}", two_params)
    county_funding = _read(engine, "SELECT * FROM mart_county_funding WHERE period = :period", one)
    facts = _facts_from_lake(source, engine, period, periods.window(period, history_periods))
    if facts is None:
        current = _read(
            engine,
            f"SELECT {', '.join(FACT_COLUMNS)} FROM fact_progress WHERE period = :period",
            one,
            FACT_COLUMNS,
        )
        history = _read(
            engine,
            f"SELECT {', '.join(HISTORY_READ_COLUMNS)} FROM fact_progress WHERE {hist} AND period <> :period",
            {**hist_params, "period": period},
            HISTORY_READ_COLUMNS,
        )
        facts = pd.concat([history, current], ignore_index=True) if len(history) else current
        facts = facts.reindex(columns=list(FACT_COLUMNS))
    submissions = _read(
        engine,
        f"SELECT {', '.join(SUBMISSION_COLUMNS)} FROM submission WHERE period = :period",
        one,
        SUBMISSION_COLUMNS,
    )
    issues = _read(
        engine, f"SELECT {', '.join(ISSUE_COLUMNS)} FROM dq_issue WHERE period = :period", one, ISSUE_COLUMNS
    )
    plan_codes = _read(engine, "SELECT DISTINCT county_code FROM ref_plan", {})["county_code"].astype(str)
    ever = _read(engine, "SELECT DISTINCT county_code FROM submission WHERE period <= :period", one)
    expected = sorted(set(plan_codes) | set(ever["county_code"].astype(str)))

    prior_exceptions = _empty(["category", "county_code", "project_id", "since_period"])
    prior_scorecard = _empty(["county_code", "score"])
    if _has_table(engine, "mart_exception"):
        prior_exceptions = _read(
            engine,
            "SELECT category, county_code, project_id, since_period FROM mart_exception WHERE period = :period",
            {"period": prev},
        )
    if _has_table(engine, "mart_scorecard"):
        prior_scorecard = _read(
            engine, "SELECT county_code, score FROM mart_scorecard WHERE period = :period", {"period": prev}
        )
    source_submissions = _read(
        engine,
        "SELECT submission_id, kind, county_code, period, sha256 FROM submission"
        " WHERE (period = :period AND status = 'accepted')"
        " OR submission_id IN (SELECT submission_id FROM mart_county_progress WHERE period = :period)"
        " OR submission_id IN (SELECT submission_id FROM mart_county_funding WHERE period = :period)",
        one,
        ("submission_id", "kind", "county_code", "period", "sha256"),
    )
    log.info(
        "pack inputs %s: %d facts, %d submissions, %d issues",
        period,
        len(facts),
        len(submissions),
        len(issues),
    )
    return PackInputs(
        period=period,
        divisions=divisions,
        county_progress=county_progress,
        city_progress=city_progress,
        county_funding=county_funding,
        facts=facts,
        submissions=submissions,
        issues=issues,
        expected_counties=expected,
        prior_exceptions=prior_exceptions,
        prior_scorecard=prior_scorecard,
        source_submissions=source_submissions,
    )
