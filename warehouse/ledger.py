"""The project ledger (挂帐销号): every project from its first return to the month it is ticked off.

Three tables (``warehouse.schema``, migration 0009), rebuilt by :func:`rebuild` inside the marts'
refresh (``Warehouse.rebuild_marts``), from the same earliest out-of-date period, in the same
transaction:

- ``ledger_state``: each project's state in each period a source reported it. Source
  ``progress`` is the monthly return (a copy of the allow-listed columns of ``fact_progress``);
  a later list report or inspection adds rows under its own source.
- ``ledger_exception``: every exception the rules of ``reports.exceptions`` raised, keyed by
  (county, project or ``''`` for the county itself, category), with the month it opened and the
  month it closed. Categories: ``NOT_STARTED_OVERDUE`` and ``STALLED`` (projects) and
  ``COUNTY_BEHIND`` (counties); the same functions and thresholds as the pack's
  ``mart_exception``. An inspection's overdue rectification can be one more category under
  its own source.
- ``ledger_project``: one row per project: first and last period, latest status, and when and how
  it was ticked off (``COMPLETED``: 已竣工, on its completion date; ``WITHDRAWN``: a later return of
  its county no longer lists it).

When an open exception closes, in the first period whose figures decide it:

- the rule no longer applies to the project in its county's return: ``RESOLVED`` (``COMPLETED``
  when the project is now 已竣工);
- the county's return no longer lists the project: ``WITHDRAWN``;
- the county sent no accepted return that month: the exception stays open (nothing shows it was
  dealt with);
- a county exception closes the first month the county is no longer behind (``RESOLVED``).

Incremental and full rebuilds give the same rows: everything before ``start`` depends only on
facts and marts before ``start`` (which did not change: ``mart_dirty``); the rebuild deletes the
events opened from ``start`` on, reopens those closed from ``start`` on (an event never changes
but for its closing), and replays the periods from ``start``. A change of the thresholds file
marks nothing: after one, rebuild from the first period (``Warehouse.rebuild_marts()`` without
arguments).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from gaibao.contract import COMPLETED
from warehouse.frames import result_frame
from warehouse.schema import (
    fact_progress,
    ledger_exception,
    ledger_project,
    ledger_state,
    mart_city_progress,
    mart_county_progress,
    submission,
)

log = logging.getLogger(__name__)

SOURCE = "progress"  # the monthly progress return
COUNTY_LEVEL = ""  # project_id of a county's own exception
STATE_COLUMNS = ("school_name", "project_type", "status", "planned_start", "completed_date", "submission_id")
EVENT_COLUMNS = [c.name for c in ledger_exception.columns]
PROJECT_COLUMNS = [c.name for c in ledger_project.columns]
_RULE_FACT_COLUMNS = (
    "county_code",
    "project_id",
    "school_name",
    "period",
    "status",
    "planned_start",
    "completed_area_m2",
    "completed_invest_wan",
)


def _frame(conn: sa.Connection, query: sa.Select) -> pd.DataFrame:
    return result_frame(conn.execute(query))


def _shift(period: str, months: int) -> str:
    year, month = (int(x) for x in period.split("-"))
    i = year * 12 + month - 1 + months
    return f"{i // 12:04d}-{i % 12 + 1:02d}"


@cache  # a few dozen distinct periods, asked once per project row (a million at national scale)
def _last_day(period: str) -> date:
    return (pd.Period(period, freq="M").end_time).date()


# -- pure parts --------------------------------------------------------------------------------
def flagged_in_period(
    facts: pd.DataFrame,
    county_progress: pd.DataFrame,
    city_progress: pd.DataFrame,
    period: str,
    th: Any,
    keys: Any = None,
) -> pd.DataFrame:
    """The exceptions the rules raise in ``period``: category, county_code, project_id ('' for a
    county), school_name, detail, since_period (the ledger's categories only)."""
    from reports.exceptions import county_behind, not_started_overdue, stalled

    parts = [
        not_started_overdue(facts, period, th, keys),
        stalled(facts, period, th, keys),
        county_behind(county_progress, city_progress, period, th),
    ]
    parts = [p for p in parts if len(p)]
    cols = ["category", "county_code", "project_id", "school_name", "detail", "since_period"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out["project_id"] = out["project_id"].where(out["project_id"].notna(), COUNTY_LEVEL).astype(str)
    out["county_code"] = out["county_code"].astype(str)
    return out[cols].drop_duplicates(["county_code", "project_id", "category"]).reset_index(drop=True)


def replay_events(
    open_events: pd.DataFrame,
    flagged: dict[str, pd.DataFrame],
    states: pd.DataFrame,
    reported: set[tuple[str, str]],
    periods: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Open and close the ledger's exceptions period by period.

    ``open_events``: the events open before the first of ``periods`` (EVENT_COLUMNS).
    ``flagged``: per period, :func:`flagged_in_period`. ``states``: (county_code, project_id,
    period, status) of the source's rows in ``periods``. ``reported``: (county_code, period) with
    an accepted return. Returns (new events, closings of earlier events: key columns +
    closed_period, closed_by); a new event closed later in ``periods`` carries its closing.
    """
    key_cols = ["county_code", "project_id", "category", "opened_period"]
    status = {
        (c, p, per): s
        for c, p, per, s in states[["county_code", "project_id", "period", "status"]].itertuples(
            index=False, name=None
        )
    }
    # key (county, project, category) -> the open event as a dict
    current: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in open_events.to_dict("records"):
        current[(row["county_code"], row["project_id"], row["category"])] = {**row, "_new": False}
    new: list[dict[str, Any]] = []
    closings: list[dict[str, Any]] = []
    for period in periods:
        f = flagged.get(period)
        hits: dict[tuple[str, str, str], dict[str, Any]] = {}
        if f is not None and len(f):
            for row in f.to_dict("records"):
                hits[(row["county_code"], row["project_id"], row["category"])] = row
        for key, event in list(current.items()):
            if key in hits:
                continue
            county, project, _ = key
            if project == COUNTY_LEVEL:
                how = "RESOLVED"
            elif (county, project, period) in status:
                how = "COMPLETED" if status[(county, project, period)] == COMPLETED else "RESOLVED"
            elif (county, period) in reported:
                how = "WITHDRAWN"
            else:
                continue  # no return from the county: nothing shows it was dealt with
            event["closed_period"], event["closed_by"] = period, how
            if not event["_new"]:
                closings.append({k: event[k] for k in (*key_cols, "closed_period", "closed_by")})
            del current[key]
        for key, row in hits.items():
            if key in current:
                continue
            event = {
                "county_code": key[0],
                "project_id": key[1],
                "category": key[2],
                "opened_period": period,
                "source": SOURCE,
                "school_name": row.get("school_name"),
                "since_period": row.get("since_period"),
                "detail": row.get("detail"),
                "closed_period": None,
                "closed_by": None,
                "_new": True,
            }
            current[key] = event
            new.append(event)
    new_frame = pd.DataFrame([{k: e[k] for k in EVENT_COLUMNS} for e in new], columns=EVENT_COLUMNS)
    return new_frame, pd.DataFrame(closings, columns=[*key_cols, "closed_period", "closed_by"])


def project_ledger(
    spans: pd.DataFrame, completed: pd.DataFrame, latest: pd.DataFrame, reported: pd.DataFrame
) -> pd.DataFrame:
    """``ledger_project`` rows.

    ``spans``: per project first_period, last_period, last_open (the last period it was not
    已竣工, None if never). ``completed``: the 已竣工 state rows (county_code, project_id, period,
    completed_date). ``latest``: per project school_name, project_type, status at last_period.
    ``reported``: (county_code, period) of the accepted returns.
    """
    if spans.empty:
        return pd.DataFrame(columns=PROJECT_COLUMNS)
    key = ["county_code", "project_id"]
    out = spans.merge(latest, on=key, how="left")
    # completed: the first 已竣工 row after the last row that was not (a reopened project counts
    # from its final completion)
    done = completed.merge(spans[[*key, "last_open"]], on=key, how="inner")
    done = done[done["last_open"].isna() | (done["period"] > done["last_open"].fillna(""))]
    done = done.sort_values([*key, "period"]).drop_duplicates(key, keep="first")
    done = done.rename(columns={"period": "_done_period", "completed_date": "_done_on"})[
        [*key, "_done_period", "_done_on"]
    ]
    out = out.merge(done, on=key, how="left")
    # withdrawn: the county's first accepted return after the project's last period
    rep = reported.sort_values(["county_code", "period"])
    nxt = pd.merge_asof(
        out[["county_code", "last_period"]]
        .reset_index()
        .assign(_n=lambda d: d["last_period"].map(_period_number) + 1)
        .sort_values("_n"),
        rep.assign(_n=rep["period"].map(_period_number)).sort_values("_n")[["county_code", "_n", "period"]],
        on="_n",
        by="county_code",
        direction="forward",
    ).set_index("index")["period"]
    out["_withdrawn"] = nxt.reindex(out.index)
    is_done = out["_done_period"].notna() & (out["status"] == COMPLETED)
    is_gone = ~is_done & out["_withdrawn"].notna()
    out["closed_period"] = np.where(is_done, out["_done_period"], np.where(is_gone, out["_withdrawn"], None))
    out["closed_by"] = np.where(is_done, "COMPLETED", np.where(is_gone, "WITHDRAWN", None))
    done_on = pd.to_datetime(out["_done_on"], errors="coerce")
    gone_on = pd.to_datetime(out["_withdrawn"].map(lambda p: _last_day(p) if isinstance(p, str) else None))
    fallback = pd.to_datetime(out["_done_period"].map(lambda p: _last_day(p) if isinstance(p, str) else None))
    closed_on = done_on.where(done_on.notna(), fallback).where(is_done, gone_on.where(is_gone))
    out["closed_on"] = [d.date() if not pd.isna(d) else None for d in closed_on]
    out = out.astype({"closed_period": object, "closed_by": object})
    out = out.where(out.notna(), None)
    return out[PROJECT_COLUMNS].sort_values(key).reset_index(drop=True)


@cache
def _period_number(period: str) -> int:
    year, month = (int(x) for x in period.split("-"))
    return year * 12 + month - 1


# -- the rebuild -------------------------------------------------------------------------------
def _rule_facts(conn: sa.Connection, from_period: str, lake: Any = None) -> pd.DataFrame:
    """The rules' fact columns of every accepted progress return from ``from_period`` on.

    From the Parquet lake when there is one (one small file per county and period, read as Arrow
    as the pack reads them: a national half-year is six million rows, too many to pass through
    SQLAlchemy rows), else, or when a file is missing, from ``fact_progress``."""
    f = fact_progress
    if lake is not None:
        from reports.inputs import _read_lake_files
        from warehouse.lake import arrow_schema

        s = submission
        subs = conn.execute(
            sa.select(s.c.period, s.c.county_code, s.c.submission_id)
            .where(s.c.kind == SOURCE, s.c.status == "accepted", s.c.period >= from_period)
            .order_by(s.c.period, s.c.county_code)
        ).all()
        files = [(p, c, lake.file_path(SOURCE, p, c, sid)) for p, c, sid in subs]
        if not lake.is_local or all(x[2].is_file() for x in files):
            full = arrow_schema(f)
            schema = pa.schema([full.field(n) for n in _RULE_FACT_COLUMNS])
            try:
                table = _read_lake_files(files, schema, lake)
                return table.to_pandas(date_as_object=True).astype({"planned_start": object})
            except FileNotFoundError:
                pass
        log.warning("ledger: lake files missing, reading the facts from SQL")
    return _frame(conn, sa.select(*[f.c[c] for c in _RULE_FACT_COLUMNS]).where(f.c.period >= from_period))


def _arrow_rows(frame: pd.DataFrame, table: sa.Table) -> pa.Table:
    """``frame``'s rows as an Arrow table with ``table``'s columns, typed from the schema (a
    column that is all NULL keeps its type)."""
    types = {
        sa.String: pa.string(),
        sa.Date: pa.date32(),
        sa.Integer: pa.int64(),
        sa.Float: pa.float64(),
        sa.Boolean: pa.bool_(),
    }
    fields = []
    for column in table.columns:
        kind = next((t for base, t in types.items() if isinstance(column.type, base)), pa.string())
        fields.append(pa.field(column.name, kind))
    schema = pa.schema(fields)
    data = frame.reindex(columns=schema.names).astype(object)
    data = data.where(data.notna(), None)
    return pa.Table.from_pandas(data, schema=schema, preserve_index=False)


def rebuild(conn: sa.Connection, from_period: str | None, th: Any, lake: Any = None) -> dict[str, int]:
    """Rebuild the ledger's source-``progress`` rows from ``from_period`` (None: the first period
    with a return) to the latest, inside the caller's transaction. ``lake``: the warehouse's
    Parquet lake, where the rules' facts are read fastest."""
    from warehouse.marts import period_range
    from warehouse.store import _chunks, bulk_insert

    s = submission
    first, last = conn.execute(
        sa.select(sa.func.min(s.c.period), sa.func.max(s.c.period)).where(s.c.kind == SOURCE)
    ).one()
    st, ev = ledger_state, ledger_exception
    if last is None:
        for t in (ledger_state, ledger_exception):
            conn.execute(t.delete().where(t.c.source == SOURCE))
        conn.execute(ledger_project.delete())
        return {"ledger_state": 0, "ledger_exception": 0, "ledger_project": 0}
    start = max(from_period or first, first)
    periods = period_range(start, last)

    # 1. states: a copy of the allow-listed fact columns (never reporter or phone)
    conn.execute(st.delete().where(st.c.source == SOURCE, st.c.period >= start))
    f = fact_progress
    cols = ["county_code", "project_id", "period", *STATE_COLUMNS]
    select = sa.select(*[f.c[c] for c in cols], sa.literal(SOURCE, sa.String(16)).label("source")).where(
        f.c.period >= start, f.c.project_id.is_not(None)
    )
    conn.execute(st.insert().from_select([*cols, "source"], select))
    n_states = conn.execute(
        sa.select(sa.func.count()).select_from(st).where(st.c.source == SOURCE, st.c.period >= start)
    ).scalar_one()

    # 2. exceptions: forget what happened from ``start`` on, then replay those periods
    conn.execute(ev.delete().where(ev.c.source == SOURCE, ev.c.opened_period >= start))
    conn.execute(
        ev.update()
        .where(ev.c.source == SOURCE, ev.c.closed_period >= start)
        .values(closed_period=None, closed_by=None)
    )
    open_events = _frame(conn, sa.select(ev).where(ev.c.source == SOURCE, ev.c.closed_period.is_(None)))
    history_from = _shift(start, -(th.history_periods - 1))
    facts = _rule_facts(conn, history_from, lake)
    cp = _frame(conn, sa.select(mart_county_progress).where(mart_county_progress.c.period >= start))
    city = _frame(conn, sa.select(mart_city_progress).where(mart_city_progress.c.period >= start))
    reported_rows = _frame(
        conn,
        sa.select(s.c.county_code, s.c.period).where(s.c.kind == SOURCE, s.c.status == "accepted").distinct(),
    )
    reported = set(reported_rows.itertuples(index=False, name=None))
    flagged = {}
    if len(facts):
        from reports.exceptions import ProjectKeys

        keys = ProjectKeys.of(facts)
        month = facts["period"].to_numpy()
    else:
        facts = facts.reindex(columns=list(_RULE_FACT_COLUMNS))
    for period in periods:
        if not len(facts):
            flagged[period] = flagged_in_period(facts, cp, city, period, th)
            continue
        # the window the pack reads (history_periods ending at the period), whatever ``start``
        # is: a longer history would count longer runs (STALLED, undated NOT_STARTED_OVERDUE)
        window = (month >= _shift(period, -(th.history_periods - 1))) & (month <= period)
        sub_keys = ProjectKeys(keys.key[window], keys.month[window])
        sub = facts[window].reset_index(drop=True)
        flagged[period] = flagged_in_period(sub, cp, city, period, th, sub_keys)
    # only the projects that hold or get an exception: the replay looks up nothing else (a
    # national month is a million rows, a few thousand of them on the ledger's exceptions)
    on_ledger = pd.concat(
        [
            open_events[["county_code", "project_id"]],
            *(f[["county_code", "project_id"]] for f in flagged.values()),
        ],
        ignore_index=True,
    ).drop_duplicates()
    states = pd.DataFrame(columns=["county_code", "project_id", "period", "status"])
    if len(facts) and len(on_ledger):
        states = facts.loc[facts["period"] >= start, ["county_code", "project_id", "period", "status"]].merge(
            on_ledger.astype({"county_code": object, "project_id": object}), on=["county_code", "project_id"]
        )
    new, closings = replay_events(open_events, flagged, states, reported, periods)
    for row in closings.to_dict("records"):
        conn.execute(
            ev.update()
            .where(
                ev.c.county_code == row["county_code"],
                ev.c.project_id == row["project_id"],
                ev.c.category == row["category"],
                ev.c.opened_period == row["opened_period"],
            )
            .values(closed_period=row["closed_period"], closed_by=row["closed_by"])
        )
    new_rows = new.astype(object).where(new.notna(), None).to_dict("records")
    for chunk in _chunks(new_rows, 5000):
        conn.execute(ev.insert(), list(chunk))

    # 3. projects: recomputed whole from the states (a later return can withdraw an old project)
    k = [st.c.county_code, st.c.project_id]
    not_done = sa.or_(st.c.status.is_(None), st.c.status != COMPLETED)
    spans = _frame(
        conn,
        sa.select(
            *k,
            sa.func.min(st.c.period).label("first_period"),
            sa.func.max(st.c.period).label("last_period"),
            sa.func.max(sa.case((not_done, st.c.period), else_=None)).label("last_open"),
        )
        .where(st.c.source == SOURCE)
        .group_by(*k),
    )
    completed = _frame(
        conn,
        sa.select(*k, st.c.period, st.c.completed_date).where(
            st.c.source == SOURCE, st.c.status == COMPLETED
        ),
    )
    last_rows = (
        sa.select(*k, sa.func.max(st.c.period).label("last_period"))
        .where(st.c.source == SOURCE)
        .group_by(*k)
        .subquery()
    )
    latest = _frame(
        conn,
        sa.select(*k, st.c.school_name, st.c.project_type, st.c.status)
        .join(
            last_rows,
            sa.and_(
                st.c.county_code == last_rows.c.county_code,
                st.c.project_id == last_rows.c.project_id,
                st.c.period == last_rows.c.last_period,
            ),
        )
        .where(st.c.source == SOURCE),
    )
    projects = project_ledger(spans, completed, latest, reported_rows)
    conn.execute(ledger_project.delete())
    # one row per project: a national ledger is a million rows, rewritten every night. The
    # warehouse's bulk path (binary COPY on PostgreSQL, a staged file on SQLite); executemany
    # took 10+ minutes for a national month on PostgreSQL.
    bulk_insert(conn, ledger_project, _arrow_rows(projects, ledger_project))
    counts = {"ledger_state": int(n_states), "ledger_exception": len(new), "ledger_project": len(projects)}
    log.info("ledger rebuilt from %s to %s: %s", start, last, counts)
    return counts
