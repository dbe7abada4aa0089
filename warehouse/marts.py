"""County, city and province marts (docs/ARCHITECTURE.md "The SQL tables", contract "Headline indicators").

The heavy part (summing a million fact rows) is one SQL ``GROUP BY`` per kind, portable between
SQLite and PostgreSQL. Everything after runs in pandas on the small aggregated frame (one row per
county and period): the carry-forward of counties without a return, the plan join, the rates,
the city and province roll-ups. Those steps are plain functions, tested on tiny frames.

Area measures (planned/started/completed area) are summed over 校舍改造 rows: the five-year plan
area is a 校舍改造 area, and the contract rejects a planned area on 设备购置 rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from gaibao.contract import BUILDING, COMPLETED, EQUIPMENT, IN_PROGRESS, NOT_STARTED
from warehouse.frames import result_frame
from warehouse.schema import (
    fact_funding,
    fact_progress,
    mart_city_progress,
    mart_county_funding,
    mart_county_progress,
    ref_division,
    ref_plan,
    submission,
)

log = logging.getLogger(__name__)

PROGRESS_COUNTS = ("projects_total", "projects_not_started", "projects_in_progress", "projects_completed")
PROGRESS_SUMS = (
    "planned_area_m2",
    "started_area_m2",
    "completed_area_m2",
    "completed_equipment_wan",
    "planned_invest_wan",
    "completed_invest_wan",
)
FUNDING_MEASURES = (
    "funds_total_wan",
    "funds_rural_infra_wan",
    "funds_urban_wan",
    "funds_equipment_wan",
    "funds_land_wan",
    "land_mu",
    "teachers_recruited",
    "teachers_rural",
    "rural_teacher_subsidy_wan",
)
FUNDING_INTS = ("teachers_recruited", "teachers_rural")

PROVINCE_NAMES = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区", "21": "辽宁省",
    "22": "吉林省", "23": "黑龙江省", "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省",
    "35": "福建省", "36": "江西省", "37": "山东省", "41": "河南省", "42": "湖北省", "43": "湖南省",
    "44": "广东省", "45": "广西壮族自治区", "46": "海南省", "50": "重庆市", "51": "四川省", "52": "贵州省",
    "53": "云南省", "54": "西藏自治区", "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区",
}  # fmt: skip

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


# -- small helpers ----------------------------------------------------------------------------
def period_range(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` inclusive, as ``YYYY-MM``."""
    if not _PERIOD_RE.match(first) or not _PERIOD_RE.match(last):
        raise ValueError(f"bad period range {first!r}..{last!r}")
    if first > last:
        return []
    return [str(p) for p in pd.period_range(first, last, freq="M").strftime("%Y-%m")]


def ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator; null where the denominator is 0 or missing (or the numerator missing)."""
    num = pd.to_numeric(numerator, errors="coerce").astype("float64")
    den = pd.to_numeric(denominator, errors="coerce").astype("float64")
    out = num / den.where(den > 0)
    return out.where(np.isfinite(out))


def province_code(county_codes: Sequence[str]) -> str:
    """``340000`` when every county is in one province, else ``000000``."""
    prefixes = {str(c)[:2] for c in county_codes}
    return f"{prefixes.pop()}0000" if len(prefixes) == 1 else "000000"


def province_name(code: str) -> str:
    return PROVINCE_NAMES.get(code[:2], "全省") if code != "000000" else "全国"


def _period_num(periods: pd.Series) -> pd.Series:
    return periods.str.slice(0, 4).astype(int) * 12 + periods.str.slice(5, 7).astype(int)


def carry_forward(aggregates: pd.DataFrame, counties: Sequence[str], periods: Sequence[str]) -> pd.DataFrame:
    """One row per county × period from ``aggregates`` (one row per county and reported period).

    A county without a row for a period gets its latest earlier row: ``source_period`` says
    which, ``has_return`` is False and ``is_carried_forward`` True. A county with no earlier row
    either gets nulls (``is_carried_forward`` False).
    """
    grid = pd.DataFrame(
        [(c, p) for p in periods for c in counties], columns=["county_code", "period"]
    ).astype({"county_code": object, "period": object})
    if grid.empty:
        return grid.assign(source_period=None, has_return=False, is_carried_forward=False)
    grid["_n"] = _period_num(grid["period"])
    agg = aggregates.rename(columns={"period": "source_period"}).copy()
    agg["county_code"] = agg["county_code"].astype(object)
    agg["source_period"] = agg["source_period"].astype(object)
    agg["_n"] = _period_num(agg["source_period"]) if len(agg) else pd.Series(dtype="int64")
    agg = agg.sort_values("_n")
    out = pd.merge_asof(grid.sort_values("_n"), agg, on="_n", by="county_code", direction="backward")
    out = out.drop(columns="_n")
    has_source = out["source_period"].notna()
    out["has_return"] = has_source & (out["source_period"] == out["period"])
    out["is_carried_forward"] = has_source & ~out["has_return"]
    out["source_period"] = out["source_period"].where(has_source, None)
    return out.sort_values(["period", "county_code"]).reset_index(drop=True)


def plans_by_period(plans: pd.DataFrame, counties: Sequence[str], periods: Sequence[str]) -> pd.DataFrame:
    """The plan figures that apply to each county and period: the cycle whose years contain the
    period's year, else the latest cycle (a cycle without years, ``''``, counts as the oldest)."""
    cols = ["county_code", "period", "plan_area_m2", "plan_equipment_wan"]
    if plans.empty or not periods:
        return pd.DataFrame(columns=cols)
    p = plans.copy()
    years = p["plan_cycle"].fillna("").astype(str).str.extract(r"^(\d{4})\D+(\d{4})$")
    p["_from"] = pd.to_numeric(years[0], errors="coerce").fillna(0).astype(int)
    p["_to"] = pd.to_numeric(years[1], errors="coerce").fillna(9999).astype(int)
    per = pd.DataFrame({"period": list(periods)})
    per["_year"] = per["period"].str.slice(0, 4).astype(int)
    x = p.merge(per, how="cross")
    x["_fits"] = (x["_from"] <= x["_year"]) & (x["_year"] <= x["_to"])
    x = x.sort_values(["_fits", "_from"]).drop_duplicates(["county_code", "period"], keep="last")
    return x[cols].reset_index(drop=True)


def _attach_divisions(frame: pd.DataFrame, divisions: pd.DataFrame) -> pd.DataFrame:
    div = divisions[["county_code", "county_name", "city_code", "city_name"]].drop_duplicates("county_code")
    out = frame.merge(div, on="county_code", how="left")
    missing = out["city_code"].isna()
    out.loc[missing, "city_code"] = out.loc[missing, "county_code"].str.slice(0, 4) + "00"
    return out


# -- county / city / province -------------------------------------------------------------------
def county_progress_mart(
    aggregates: pd.DataFrame,
    counties: Sequence[str],
    periods: Sequence[str],
    plans: pd.DataFrame,
    divisions: pd.DataFrame,
) -> pd.DataFrame:
    """``mart_county_progress`` rows. ``aggregates``: one row per accepted (county, period) with
    submission_id, is_late and the PROGRESS_COUNTS / PROGRESS_SUMS measures."""
    out = carry_forward(aggregates, counties, periods)
    for col in (*PROGRESS_COUNTS, *PROGRESS_SUMS, "submission_id", "is_late"):
        if col not in out.columns:
            out[col] = None
    out = out.merge(plans_by_period(plans, counties, periods), on=["county_code", "period"], how="left")
    out = _attach_divisions(out, divisions)
    out["is_late"] = out["is_late"].astype(object).where(out["has_return"], None)
    for col in PROGRESS_COUNTS:
        out[col] = pd.to_numeric(out[col]).astype("Int64")
    for col in (*PROGRESS_SUMS, "plan_area_m2", "plan_equipment_wan"):
        out[col] = pd.to_numeric(out[col]).astype("float64")
    out = with_rates(out)
    cols = [c.name for c in mart_county_progress.columns]
    return out[cols].sort_values(["period", "county_code"]).reset_index(drop=True)


def with_rates(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["area_completion_rate"] = ratio(out["completed_area_m2"], out["plan_area_m2"])
    out["start_rate"] = ratio(out["started_area_m2"], out["planned_area_m2"])
    out["equipment_completion_rate"] = ratio(out["completed_equipment_wan"], out["plan_equipment_wan"])
    return out


def city_progress_mart(county_mart: pd.DataFrame) -> pd.DataFrame:
    """``mart_city_progress``: one row per city and period plus one province row per period.
    Measures are summed; rates are recomputed from the sums, never averaged."""
    cols = [c.name for c in mart_city_progress.columns]
    if county_mart.empty:
        return pd.DataFrame(columns=cols)
    m = county_mart.copy()
    measures = [*PROGRESS_COUNTS, *PROGRESS_SUMS, "plan_area_m2", "plan_equipment_wan"]
    m["_cf"] = m["is_carried_forward"].astype(bool)
    m["_hr"] = m["has_return"].astype(bool)
    prov = province_code(m["county_code"].tolist())
    m["city_name"] = m["city_name"].astype(object).where(m["city_name"].notna(), "")

    def roll(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = frame.groupby(keys, dropna=False, sort=True)
        sums = g[measures].sum(min_count=1)
        sums["counties_total"] = g["county_code"].nunique()
        sums["counties_reporting"] = g["_hr"].sum()
        sums["counties_carried_forward"] = g["_cf"].sum()
        return sums.reset_index()

    cities = roll(m, ["period", "city_code", "city_name"]).assign(level="city")
    province = roll(m, ["period"]).assign(level="province", city_code=prov, city_name=province_name(prov))
    out = pd.concat([cities, province], ignore_index=True)
    out["city_name"] = out["city_name"].replace("", None)
    for col in (*PROGRESS_COUNTS, "counties_total", "counties_reporting", "counties_carried_forward"):
        out[col] = pd.to_numeric(out[col]).astype("Int64")
    out = with_rates(out)
    return out[cols].sort_values(["period", "level", "city_code"]).reset_index(drop=True)


def county_funding_mart(
    aggregates: pd.DataFrame, counties: Sequence[str], periods: Sequence[str], divisions: pd.DataFrame
) -> pd.DataFrame:
    """``mart_county_funding`` rows, carried forward like the progress mart."""
    out = carry_forward(aggregates, counties, periods)
    for col in (*FUNDING_MEASURES, "submission_id", "is_late"):
        if col not in out.columns:
            out[col] = None
    out = _attach_divisions(out, divisions)
    out["is_late"] = out["is_late"].astype(object).where(out["has_return"], None)
    for col in FUNDING_MEASURES:
        out[col] = pd.to_numeric(out[col]).astype("Int64" if col in FUNDING_INTS else "float64")
    cols = [c.name for c in mart_county_funding.columns]
    return out[cols].sort_values(["period", "county_code"]).reset_index(drop=True)


# -- SQL aggregation ---------------------------------------------------------------------------
def _sum_if(col: sa.ColumnElement, cond: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.sum(sa.case((cond, col), else_=0.0))


def progress_aggregates(
    conn: sa.Connection, from_period: str, carried: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """Σ per accepted progress submission, for periods ≥ ``from_period`` and the ``carried``
    (county_code, period) keys (see :func:`_latest_before`)."""
    f = fact_progress
    measures = [
        sa.func.count().label("projects_total"),
        sa.func.sum(sa.case((f.c.status == NOT_STARTED, 1), else_=0)).label("projects_not_started"),
        sa.func.sum(sa.case((f.c.status == IN_PROGRESS, 1), else_=0)).label("projects_in_progress"),
        sa.func.sum(sa.case((f.c.status == COMPLETED, 1), else_=0)).label("projects_completed"),
        _sum_if(f.c.planned_area_m2, f.c.project_type == BUILDING).label("planned_area_m2"),
        _sum_if(f.c.started_area_m2, f.c.project_type == BUILDING).label("started_area_m2"),
        _sum_if(f.c.completed_area_m2, f.c.project_type == BUILDING).label("completed_area_m2"),
        _sum_if(f.c.completed_invest_wan, f.c.project_type == EQUIPMENT).label("completed_equipment_wan"),
        sa.func.sum(f.c.planned_invest_wan).label("planned_invest_wan"),
        sa.func.sum(f.c.completed_invest_wan).label("completed_invest_wan"),
    ]
    return _aggregate(conn, f, measures, from_period, carried)


def funding_aggregates(
    conn: sa.Connection, from_period: str, carried: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    f = fact_funding
    measures = [sa.func.sum(f.c[m]).label(m) for m in FUNDING_MEASURES]
    return _aggregate(conn, f, measures, from_period, carried)


def _aggregate(
    conn: sa.Connection,
    f: sa.Table,
    measures: Sequence[sa.ColumnElement],
    from_period: str,
    carried: Sequence[tuple[str, str]],
) -> pd.DataFrame:
    """submission_id, county_code, period and the ``measures`` summed over each submission's
    fact rows in periods ≥ ``from_period`` or under the ``carried`` keys.

    Summed by (county_code, period), the first columns of an index of each fact table (neither
    has one on submission_id alone): SQLite then reads the index in order instead of sorting the
    rows (a national month: about 1.4 s against 1.8-2.2 s). A (county, period) holds the rows of
    its current submission only: min = max of submission_id says so, and a key that held the rows
    of several submissions would be summed per submission, as before."""
    from warehouse.store import matching_keys

    by_key = sa.select(
        sa.func.min(f.c.submission_id).label("submission_id"),
        f.c.county_code,
        f.c.period,
        *measures,
        sa.func.max(f.c.submission_id).label("_last_submission_id"),
    ).group_by(f.c.county_code, f.c.period)
    frames = []
    # On PostgreSQL one statement per period: the server reads a national month's carried rows
    # by one parallel scan of the table or by the index, as it finds cheaper.
    for where in [f.c.period >= from_period, *matching_keys(conn, f, carried, per_statement=None)]:
        res = conn.execute(by_key.where(where))
        frames.append(result_frame(res))
    agg = pd.concat(frames, ignore_index=True)
    mixed = agg["submission_id"] != agg.pop("_last_submission_id")
    if mixed.any():
        by_submission = sa.select(f.c.submission_id, f.c.county_code, f.c.period, *measures).group_by(
            f.c.submission_id, f.c.county_code, f.c.period
        )
        parts = [agg[~mixed]]
        for c, p in agg.loc[mixed, ["county_code", "period"]].itertuples(index=False, name=None):
            res = conn.execute(by_submission.where(f.c.county_code == c, f.c.period == p))
            parts.append(result_frame(res))
        agg = pd.concat(parts, ignore_index=True)
    agg = agg.drop_duplicates("submission_id")
    # Only accepted submissions (the fact tables hold nothing else, but say so), with is_late.
    sub_ids = agg["submission_id"].tolist()
    meta: list[Any] = []
    for i in range(0, len(sub_ids), 900):
        res = conn.execute(
            sa.select(submission.c.submission_id, submission.c.is_late).where(
                submission.c.submission_id.in_(sub_ids[i : i + 900]), submission.c.status == "accepted"
            )
        )
        meta.extend(res.all())
    meta_df = pd.DataFrame(meta, columns=["submission_id", "is_late"])
    return agg.merge(meta_df, on="submission_id", how="inner")


def _latest_before(conn: sa.Connection, kind: str, period: str) -> list[tuple[str, str]]:
    """(county_code, period) of each county's latest accepted return before ``period``."""
    s = submission
    q = sa.select(s.c.county_code, s.c.period).where(
        s.c.kind == kind, s.c.status == "accepted", s.c.period < period
    )
    rows = pd.DataFrame(conn.execute(q).all(), columns=["county_code", "period"])
    if rows.empty:
        return []
    latest = rows.sort_values("period").drop_duplicates("county_code", keep="last")
    return list(latest.itertuples(index=False, name=None))


def rebuild(conn: sa.Connection, from_period: str | None = None) -> dict[str, int]:
    """Recompute the three marts for every period from ``from_period`` (or the first period with
    any submission) to the latest period with any submission, inside the caller's transaction."""
    s = submission
    first, last = conn.execute(sa.select(sa.func.min(s.c.period), sa.func.max(s.c.period))).one()
    if last is None:
        return {t.name: 0 for t in (mart_county_progress, mart_city_progress, mart_county_funding)}
    start = from_period or first
    periods = period_range(start, last)
    sub_counties = {r[0] for r in conn.execute(sa.select(s.c.county_code).distinct())}
    plans = pd.DataFrame(conn.execute(sa.select(ref_plan)).all(), columns=[c.name for c in ref_plan.columns])
    counties = sorted(sub_counties | set(plans["county_code"]))
    divisions = pd.DataFrame(
        conn.execute(sa.select(ref_division)).all(), columns=[c.name for c in ref_division.columns]
    )

    progress = progress_aggregates(conn, start, _latest_before(conn, "progress", start))
    funding = funding_aggregates(conn, start, _latest_before(conn, "funding", start))
    county = county_progress_mart(progress, counties, periods, plans, divisions)
    city = city_progress_mart(county)
    fund = county_funding_mart(funding, counties, periods, divisions)

    from warehouse.lake import frame_to_arrow
    from warehouse.store import bulk_insert

    counts = {}
    for table, frame in (
        (mart_county_progress, county),
        (mart_city_progress, city),
        (mart_county_funding, fund),
    ):
        conn.execute(table.delete().where(table.c.period >= start))
        counts[table.name] = bulk_insert(conn, table, frame_to_arrow(frame, table))
    log.info("marts rebuilt from %s to %s: %s", start, last, counts)
    return counts
