"""The county scorecard (``mart_scorecard``): 量化打分, 0-100, ranked in the city and province.

Components (weights from :class:`reports.config.ScoreWeights`; points = weight x fraction):

- area completion, equipment completion, start rate: the rate, capped at 1 (a county past its
  plan gets full points, no more); no rate (no plan) gives 0;
- timeliness: per return kind (progress, funding), 1 on time, ``late_fraction`` late, 0 missing
  or refused; the mean over the kinds;
- data quality: 1 - rejected rows / rows received over the period's accepted returns; 0 when
  nothing was accepted;
- overdue and stalled projects (a penalty): 1 - share of the county's projects that are
  NOT_STARTED_OVERDUE or STALLED this period; full points for a county with no projects.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from reports.config import WEIGHT_KEYS, ScoreWeights

log = logging.getLogger(__name__)

SCORE_COLUMNS = [
    "period",
    "county_code",
    "city_code",
    "score",
    "rank_in_city",
    "rank_in_province",
    *[f"points_{k}" for k in WEIGHT_KEYS],
    "score_change",
]


def _timeliness(submissions: pd.DataFrame, codes: pd.Index, period: str, late_fraction: float) -> pd.Series:
    kinds = ("progress", "funding")
    total = pd.Series(0.0, index=codes)
    if submissions.empty:
        return total
    acc = submissions[(submissions["period"] == period) & (submissions["status"] == "accepted")]
    for kind in kinds:
        k = acc[acc["kind"] == kind]
        late = k["is_late"].fillna(False).astype(bool).groupby(k["county_code"].astype(str)).any()
        frac = pd.Series(np.where(late.to_numpy(), late_fraction, 1.0), index=late.index)
        total = total.add(frac.reindex(codes).fillna(0.0), fill_value=0.0)
    return total / len(kinds)


def _data_quality(submissions: pd.DataFrame, codes: pd.Index, period: str) -> pd.Series:
    if submissions.empty:
        return pd.Series(0.0, index=codes)
    acc = submissions[(submissions["period"] == period) & (submissions["status"] == "accepted")]
    g = acc.groupby(acc["county_code"].astype(str))
    total = g["rows_total"].sum().astype(float)
    rejected = g["rows_rejected"].sum().astype(float)
    share = (rejected / total.where(total > 0)).fillna(0.0).clip(0, 1)
    return (1.0 - share).reindex(codes).fillna(0.0)


def compute_scorecard(
    county_progress: pd.DataFrame,
    submissions: pd.DataFrame,
    exceptions: pd.DataFrame,
    period: str,
    weights: ScoreWeights,
    prior_scorecard: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The period's ``mart_scorecard`` rows, plus county/city names for display."""
    cp = county_progress[county_progress["period"] == period].copy()
    if cp.empty:
        return pd.DataFrame(columns=[*SCORE_COLUMNS, "county_name", "city_name"])
    cp["county_code"] = cp["county_code"].astype(str)
    cp = cp.drop_duplicates("county_code").set_index("county_code")
    codes = cp.index
    w = weights.weights

    def rate(col: str) -> pd.Series:
        return cp[col].astype(float).fillna(0.0).clip(0.0, 1.0)

    points = pd.DataFrame(index=codes)
    points["points_area_completion"] = w["area_completion"] * rate("area_completion_rate")
    points["points_equipment_completion"] = w["equipment_completion"] * rate("equipment_completion_rate")
    points["points_start_rate"] = w["start_rate"] * rate("start_rate")
    points["points_timeliness"] = w["timeliness"] * _timeliness(
        submissions, codes, period, weights.late_fraction
    )
    points["points_data_quality"] = w["data_quality"] * _data_quality(submissions, codes, period)

    bad = (
        exceptions[exceptions["category"].isin(["NOT_STARTED_OVERDUE", "STALLED"])]
        if len(exceptions)
        else exceptions
    )
    n_bad = (
        bad.drop_duplicates(["county_code", "project_id"])
        .groupby("county_code")
        .size()
        .reindex(codes)
        .fillna(0)
        if len(bad)
        else pd.Series(0.0, index=codes)
    )
    projects = cp["projects_total"].astype(float).fillna(0.0)
    share = (n_bad / projects.where(projects > 0)).fillna(0.0).clip(0, 1)
    points["points_overdue_stalled"] = w["overdue_stalled"] * (1.0 - share)

    points = points.round(2)
    out = points.copy()
    out["score"] = points.sum(axis=1).round(1)
    out["period"] = period
    out["city_code"] = cp["city_code"]
    out["county_name"] = cp.get("county_name")
    out["city_name"] = cp.get("city_name")
    out["rank_in_province"] = out["score"].rank(method="min", ascending=False).astype(int)
    out["rank_in_city"] = out.groupby("city_code")["score"].rank(method="min", ascending=False).astype(int)
    if prior_scorecard is not None and len(prior_scorecard):
        prior = prior_scorecard.assign(county_code=prior_scorecard["county_code"].astype(str)).set_index(
            "county_code"
        )
        out["score_change"] = (out["score"] - prior["score"].astype(float).reindex(codes)).round(1)
    else:
        out["score_change"] = np.nan
    out = out.reset_index().rename(columns={"index": "county_code"})
    out = out.sort_values(["rank_in_province", "county_code"]).reset_index(drop=True)
    return out[[*SCORE_COLUMNS, "county_name", "city_name"]]
