"""The exception mart (``mart_exception``): what the joint meeting must look at, by category.

One plain function per category, each over small frames; :func:`compute_exceptions` runs them
all for a :class:`reports.inputs.PackInputs` and carries ``since_period`` over from the previous
period's mart.

Definitions (thresholds from :class:`reports.config.Thresholds`):

- ``NOT_STARTED_OVERDUE``: 未开工 and ``planned_start`` more than ``not_started_overdue_days``
  days before the period's last day (exactly 90 days is not overdue, 91 is); or no
  ``planned_start`` and 未开工 in each of the last ``not_started_no_date_periods`` periods.
- ``STALLED``: 在建 now, and completed area and completed investment equal to the previous
  period's in ``stalled_periods`` consecutive comparisons ending now (2: P == P-1 == P-2).
  A missing period breaks the chain.
- ``COUNTY_BEHIND``: a county below its five-year plan that lags: its area (or equipment)
  completion rate is below its city's by more than ``behind_city_points`` percentage points
  (exactly 10 is not), or, in a province with more than ``bottom_n`` counties, its area
  completion rate is among the province's ``bottom_n`` lowest. A rate at or above the plan
  (100%) never counts: a county is never listed for a measure in which it has met its plan,
  whatever its city or its rank (with 15 counties, the bottom 10 used to reach counties at
  105.9% of plan).
- ``MISSING_RETURN``: an expected county sent nothing for a kind this period.
- ``LATE_RETURN``: the county's accepted return of a kind arrived after the due day.
- ``REFUSED_RETURN``: the county's returns of a kind were all refused (no accepted one).
- ``DATA_ERRORS``: the accepted return of a kind has rows rejected.
- ``UNEXPLAINED_WARNINGS``: warnings on the accepted returns without a note from the county.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gaibao.contract import IN_PROGRESS, KIND_NAME_ZH, NOT_STARTED
from reports import periods
from reports.config import Thresholds
from reports.inputs import PackInputs

log = logging.getLogger(__name__)

CATEGORIES: dict[str, str] = {
    "NOT_STARTED_OVERDUE": "逾期未开工项目",
    "STALLED": "停滞项目",
    "COUNTY_BEHIND": "进度滞后县区",
    "MISSING_RETURN": "未报送月报",
    "LATE_RETURN": "逾期报送",
    "REFUSED_RETURN": "报送被退回",
    "DATA_ERRORS": "数据错误（行被拒收）",
    "UNEXPLAINED_WARNINGS": "预警未说明",
}
PROJECT_CATEGORIES = ("NOT_STARTED_OVERDUE", "STALLED")

EXCEPTION_COLUMNS = [
    "period",
    "category",
    "county_code",
    "city_code",
    "project_id",
    "school_name",
    "detail",
    "since_period",
]

_TOL = 1e-9


def empty_exceptions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in EXCEPTION_COLUMNS})


def _frame(rows: pd.DataFrame, period: str, category: str) -> pd.DataFrame:
    """Shape rows (county_code, detail, since_period and optional project columns) as exceptions."""
    if rows.empty:
        return empty_exceptions()
    out = pd.DataFrame(
        {
            "period": period,
            "category": category,
            "county_code": rows["county_code"].astype(str).to_numpy(),
            "city_code": rows["city_code"].to_numpy() if "city_code" in rows else None,
            "project_id": rows["project_id"].to_numpy() if "project_id" in rows else None,
            "school_name": rows["school_name"].to_numpy() if "school_name" in rows else None,
            "detail": rows["detail"].to_numpy(),
            "since_period": rows["since_period"].to_numpy() if "since_period" in rows else period,
        }
    )
    return out[EXCEPTION_COLUMNS]


def _pidx(series: pd.Series) -> np.ndarray:
    """Month numbers of ``YYYY-MM`` values (computed once per distinct value)."""
    codes, uniques = pd.factorize(series.astype(str))
    table = np.array([periods.index(u) for u in uniques], dtype=np.int64)
    return table[codes] if len(uniques) else np.zeros(len(series), dtype=np.int64)


def _runs(mask: np.ndarray) -> np.ndarray:
    """For each position, how many consecutive True values end there (0 where False)."""
    c = np.cumsum(mask, dtype=np.int64)
    reset = np.maximum.accumulate(np.where(mask, 0, c))
    return c - reset


@dataclass
class ProjectHistory:
    """The facts of the projects present now, sorted by project then period, as numpy arrays.

    ``now`` marks each project's row of the current period. ``continues`` marks rows whose
    previous row is the same project in the calendar month just before.
    """

    rows: pd.DataFrame  # the sorted history rows
    now: np.ndarray
    continues: np.ndarray


HISTORY_COLUMNS = (
    "county_code",
    "project_id",
    "school_name",
    "period",
    "status",
    "planned_start",
    "completed_area_m2",
    "completed_invest_wan",
)


@dataclass(frozen=True)
class ProjectKeys:
    """One integer per (county, project) and one month number per row of a facts frame."""

    key: np.ndarray
    month: np.ndarray

    @classmethod
    def of(cls, facts: pd.DataFrame) -> ProjectKeys:
        county = pd.factorize(facts["county_code"])[0].astype(np.int64)
        project = pd.factorize(facts["project_id"])[0].astype(np.int64)
        return cls(county * (int(project.max(initial=0)) + 1) + project, _pidx(facts["period"]))


def project_history(
    facts: pd.DataFrame, period: str, keep: np.ndarray | None = None, keys: ProjectKeys | None = None
) -> ProjectHistory:
    """History of the projects that are in ``facts`` at ``period`` (optionally only where ``keep``)."""
    keys = keys or ProjectKeys.of(facts)
    key, p = keys.key, keys.month
    is_now = p == periods.index(period)
    wanted = is_now if keep is None else is_now & keep
    sel = np.isin(key, np.unique(key[wanted])) & (p <= periods.index(period))
    key, p = key[sel], p[sel]
    order = np.lexsort((p, key))
    cols = [c for c in HISTORY_COLUMNS if c in facts.columns]
    rows = facts[cols].iloc[np.flatnonzero(sel)[order]].reset_index(drop=True)
    key, p = key[order], p[order]
    same = np.zeros(len(key), dtype=bool)
    same[1:] = key[1:] == key[:-1]
    step = np.zeros(len(key), dtype=bool)
    step[1:] = p[1:] == p[:-1] + 1
    return ProjectHistory(rows=rows, now=p == periods.index(period), continues=same & step)


def not_started_overdue(
    facts: pd.DataFrame, period: str, th: Thresholds, keys: ProjectKeys | None = None
) -> pd.DataFrame:
    """Projects not started well after their planned start, or not started for many periods."""
    at_p = (facts["period"] == period).to_numpy()
    not_started = (facts["status"] == NOT_STARTED).to_numpy()
    cur = facts[at_p & not_started]
    if cur.empty:
        return empty_exceptions()
    end = pd.Timestamp(periods.last_day(period))
    planned = pd.to_datetime(cur["planned_start"], errors="coerce")
    days = (end - planned).dt.days
    dated = cur[(planned.notna() & (days > th.not_started_overdue_days)).to_numpy()].copy()
    parts = []
    if not dated.empty:
        ps = planned[dated.index]
        dated["since_period"] = (ps + pd.Timedelta(days=th.not_started_overdue_days + 1)).dt.strftime("%Y-%m")
        d = days[dated.index].astype(int)
        dated["detail"] = (
            "计划"
            + ps.dt.strftime("%Y年%m月%d日")
            + f"开工，至{end:%Y年%m月%d日}已超过"
            + d.astype(str)
            + "天仍未开工"
        )
        parts.append(dated)

    no_date = pd.to_datetime(facts["planned_start"], errors="coerce").isna().to_numpy()
    if (not_started & no_date & at_p).any():
        h = project_history(facts, period, keep=not_started & no_date, keys=keys)
        flag = (h.rows["status"] == NOT_STARTED).to_numpy() & pd.to_datetime(
            h.rows["planned_start"], errors="coerce"
        ).isna().to_numpy()
        prev_flag = np.zeros(len(flag), dtype=bool)
        prev_flag[1:] = flag[:-1]
        run = np.where(flag, _runs(flag & h.continues & prev_flag) + 1, 0)
        n = th.not_started_no_date_periods
        hit_mask = h.now & (run >= n)
        if hit_mask.any():
            hit = h.rows[hit_mask].copy()
            r = run[hit_mask]
            hit["since_period"] = [periods.shift(period, -(int(x) - n)) for x in r]
            hit["detail"] = [f"未填计划开工日期，已连续{int(x)}个月未开工" for x in r]
            parts.append(hit)
    if not parts:
        return empty_exceptions()
    return _frame(pd.concat(parts, ignore_index=True), period, "NOT_STARTED_OVERDUE")


def stalled(
    facts: pd.DataFrame, period: str, th: Thresholds, keys: ProjectKeys | None = None
) -> pd.DataFrame:
    """在建 projects whose completed area and investment have not moved for several periods."""
    in_progress_now = ((facts["period"] == period) & (facts["status"] == IN_PROGRESS)).to_numpy()
    if not in_progress_now.any():
        return empty_exceptions()
    h = project_history(facts, period, keep=(facts["status"] == IN_PROGRESS).to_numpy(), keys=keys)
    area = h.rows["completed_area_m2"].astype(float).fillna(0.0).to_numpy()
    inv = h.rows["completed_invest_wan"].astype(float).fillna(0.0).to_numpy()
    unchanged = h.continues.copy()
    unchanged[1:] &= (np.abs(area[1:] - area[:-1]) <= _TOL) & (np.abs(inv[1:] - inv[:-1]) <= _TOL)
    run = _runs(unchanged)
    n = th.stalled_periods
    hit_mask = h.now & (run >= n)
    if not hit_mask.any():
        return empty_exceptions()
    hit = h.rows[hit_mask].copy()
    r = run[hit_mask]
    hit["since_period"] = [periods.shift(period, -(int(x) - n)) for x in r]
    hit["detail"] = [
        f"在建项目，竣工面积（{a:,.0f}平方米）和完成投资（{i:,.2f}万元）已连续{int(x)}个月没有变化"
        for a, i, x in zip(area[hit_mask], inv[hit_mask], r, strict=True)
    ]
    return _frame(hit, period, "STALLED")


def _pct(x: float) -> str:
    return "—" if pd.isna(x) else f"{x * 100:.1f}%"


def city_rates_from_counties(cp: pd.DataFrame) -> pd.DataFrame:
    """City rates recomputed from the county sums (when mart_city_progress has no rows)."""
    sums = ["completed_area_m2", "plan_area_m2", "completed_equipment_wan", "plan_equipment_wan"]
    c = cp.reindex(columns=["city_code", *sums])
    g = c.assign(**{k: c[k].astype(float) for k in sums}).groupby("city_code")[sums].sum(min_count=1)
    return pd.DataFrame(
        {
            "city_code": g.index,
            "area_completion_rate": (
                g["completed_area_m2"] / g["plan_area_m2"].where(g["plan_area_m2"] > 0)
            ).to_numpy(),
            "equipment_completion_rate": (
                g["completed_equipment_wan"] / g["plan_equipment_wan"].where(g["plan_equipment_wan"] > 0)
            ).to_numpy(),
        }
    )


def county_behind(
    county_progress: pd.DataFrame, city_progress: pd.DataFrame, period: str, th: Thresholds
) -> pd.DataFrame:
    """Counties well below their city, or in the province's bottom N by area completion."""
    cp = county_progress[county_progress["period"] == period].copy()
    if cp.empty:
        return empty_exceptions()
    city = (
        city_progress[(city_progress["period"] == period) & (city_progress["level"] == "city")]
        if len(city_progress)
        else city_progress
    )
    if city.empty:
        city = city_rates_from_counties(cp)
    city = city[["city_code", "area_completion_rate", "equipment_completion_rate"]].rename(
        columns={"area_completion_rate": "_city_area", "equipment_completion_rate": "_city_eq"}
    )
    m = cp.merge(city, on="city_code", how="left")
    area = m["area_completion_rate"].astype(float)
    eq = m["equipment_completion_rate"].astype(float)
    area_gap = ((m["_city_area"].astype(float) - area) * 100).round(6)
    eq_gap = ((m["_city_eq"].astype(float) - eq) * 100).round(6)
    below_plan_area = (area < 1.0 - _TOL).fillna(False)
    below_plan_eq = (eq < 1.0 - _TOL).fillna(False)
    behind_area = (area_gap > th.behind_city_points).fillna(False) & below_plan_area
    behind_eq = (eq_gap > th.behind_city_points).fillna(False) & below_plan_eq
    ranked = m.assign(_rate=area).dropna(subset=["_rate"]).sort_values(["_rate", "county_code"])
    bottom_rank = pd.Series(np.arange(1, len(ranked) + 1), index=ranked.index)
    rank = bottom_rank.reindex(m.index)
    # the bottom N means something only in a province with more than N counties
    ranks_apply = len(m) > th.bottom_n
    in_bottom = (rank <= th.bottom_n).fillna(False) & below_plan_area & ranks_apply
    hit = behind_area | behind_eq | in_bottom
    if not hit.any():
        return empty_exceptions()
    details = []
    for i in m.index[hit]:
        reasons = []
        if behind_area[i]:
            reasons.append(
                f"校舍改造面积完成率{_pct(area[i])}，低于全市（{_pct(m.at[i, '_city_area'])}）{area_gap[i]:.1f}个百分点"
            )
        if behind_eq[i]:
            reasons.append(
                f"设备购置完成率{_pct(eq[i])}，低于全市（{_pct(m.at[i, '_city_eq'])}）{eq_gap[i]:.1f}个百分点"
            )
        if in_bottom[i]:
            reasons.append(f"面积完成率{_pct(area[i])}，全省{len(m)}个县区中倒数第{int(rank[i])}名")
        details.append("；".join(reasons))
    rows = m[hit].copy()
    rows["detail"] = details
    return _frame(rows, period, "COUNTY_BEHIND")


def county_behind_rule_zh(th: Thresholds) -> str:
    """The COUNTY_BEHIND rule in the words of the thresholds in force (the pack's note)."""
    points = f"{th.behind_city_points:g}"
    return (
        f"列入条件：校舍改造面积完成率或设备购置完成率低于所在市{points}个百分点以上；"
        f"或全省县区多于{th.bottom_n}个时，面积完成率居全省后{th.bottom_n}名。"
        "某项完成率已达到或超过五年规划（100%）的，不因该项列入。"
    )


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    if "received_at" in frame and len(frame):
        return frame.sort_values("received_at", kind="stable")
    return frame


def return_exceptions(
    submissions: pd.DataFrame,
    expected_counties: list[str],
    period: str,
    kinds: tuple[str, ...] = ("progress", "funding"),
) -> pd.DataFrame:
    """MISSING_RETURN, LATE_RETURN and REFUSED_RETURN for each kind."""
    parts = []
    subs = submissions[submissions["period"] == period] if len(submissions) else submissions
    expected = pd.Index(sorted(set(expected_counties)), dtype="object")
    for kind in kinds:
        name = KIND_NAME_ZH[kind]
        k = subs[subs["kind"] == kind] if len(subs) else subs
        status = k["status"] if len(k) else pd.Series(dtype="object")
        any_codes = set(k["county_code"].astype(str)) if len(k) else set()
        accepted = k[status == "accepted"] if len(k) else k
        accepted_codes = set(accepted["county_code"].astype(str)) if len(k) else set()
        missing = [c for c in expected if c not in any_codes]
        if missing:
            parts.append(
                _frame(
                    pd.DataFrame({"county_code": missing, "detail": f"本期未报送{name}"}),
                    period,
                    "MISSING_RETURN",
                )
            )
        if len(k):
            refused = _latest(k[(status == "refused") & ~k["county_code"].astype(str).isin(accepted_codes)])
            refused = refused.drop_duplicates("county_code", keep="last")
            if len(refused):
                refused = refused.assign(
                    detail=[f"{name}被退回：{r or '原因未记录'}" for r in refused["reason"].fillna("")]
                )
                parts.append(_frame(refused, period, "REFUSED_RETURN"))
            late = accepted[accepted["is_late"].fillna(False).astype(bool)]
            if len(late):
                received = pd.to_datetime(late["received_at"], utc=True, errors="coerce")
                received = received.dt.tz_convert("Asia/Shanghai")
                late = late.assign(
                    detail=[
                        f"{name}于{t:%Y年%m月%d日}报送，晚于截止日"
                        if not pd.isna(t)
                        else f"{name}晚于截止日报送"
                        for t in received
                    ]
                )
                parts.append(_frame(late, period, "LATE_RETURN"))
    if not parts:
        return empty_exceptions()
    return pd.concat(parts, ignore_index=True)


def top_rules(issues: pd.DataFrame, n: int = 3, key: str = "submission_id") -> pd.Series:
    """Per ``key`` (a submission, a county): 'RULE×count' of its ``n`` most frequent rules."""
    if issues.empty:
        return pd.Series(dtype="object")
    counts = issues.groupby([key, "rule"]).size().rename("n").reset_index()
    counts = counts.sort_values([key, "n", "rule"], ascending=[True, False, True])
    top = counts.groupby(key).head(n)
    labels = top["rule"].astype(str) + "×" + top["n"].astype(str)
    return labels.groupby(top[key]).agg("、".join)


def data_errors(submissions: pd.DataFrame, issues: pd.DataFrame, period: str) -> pd.DataFrame:
    """Accepted returns of the period with rows rejected (one row per county and kind)."""
    if submissions.empty:
        return empty_exceptions()
    acc = submissions[(submissions["period"] == period) & (submissions["status"] == "accepted")]
    acc = acc[acc["rows_rejected"].fillna(0).astype(int) > 0]
    if acc.empty:
        return empty_exceptions()
    errs = issues[(issues["severity"] == "error") & issues["submission_id"].isin(acc["submission_id"])]
    top = top_rules(errs)
    acc = acc.assign(
        detail=[
            f"{KIND_NAME_ZH.get(k, k)}有{int(n)}行被拒收"
            + (f"（主要规则：{top[s]}）" if s in top.index else "")
            for k, n, s in zip(acc["kind"], acc["rows_rejected"], acc["submission_id"], strict=True)
        ]
    )
    return _frame(acc, period, "DATA_ERRORS")


def unexplained_warnings(submissions: pd.DataFrame, issues: pd.DataFrame, period: str) -> pd.DataFrame:
    """Warnings on accepted returns that carry no explanation (one row per county)."""
    if issues.empty or submissions.empty:
        return empty_exceptions()
    acc = submissions[(submissions["period"] == period) & (submissions["status"] == "accepted")]
    w = issues[
        (issues["severity"] == "warning")
        & ~issues["is_explained"].fillna(False).astype(bool)
        & issues["submission_id"].isin(acc["submission_id"])
    ]
    if w.empty:
        return empty_exceptions()
    per_county = top_rules(w, key="county_code")
    counts = w.groupby("county_code").size()
    rows = pd.DataFrame({"county_code": counts.index.astype(str)})
    rows["detail"] = [
        f"{int(counts[c])}条预警未说明（{per_county.get(c, '')}），请在备注中说明或更正" for c in counts.index
    ]
    return _frame(rows, period, "UNEXPLAINED_WARNINGS")


def carry_since(exceptions: pd.DataFrame, prior: pd.DataFrame) -> pd.DataFrame:
    """``since_period`` = the earlier of this period's value and last period's for the same exception."""
    if exceptions.empty or prior is None or prior.empty:
        return exceptions
    key = ["category", "county_code", "_pid"]
    p = prior.assign(
        _pid=prior.get("project_id", pd.Series(index=prior.index, dtype="object")).fillna("").astype(str)
    )
    p = p[[*key, "since_period"]].rename(columns={"since_period": "_prior_since"}).drop_duplicates(key)
    e = exceptions.assign(_pid=exceptions["project_id"].fillna("").astype(str))
    e = e.merge(p, on=key, how="left")
    prior_since = e["_prior_since"]
    earlier = prior_since.notna() & (prior_since.astype(str) < e["since_period"].astype(str))
    e.loc[earlier, "since_period"] = prior_since[earlier]
    return e[EXCEPTION_COLUMNS]


def compute_exceptions(inputs: PackInputs, th: Thresholds) -> pd.DataFrame:
    """The period's ``mart_exception`` rows (city_code filled from the divisions)."""
    p = inputs.period
    facts = inputs.facts
    keys = ProjectKeys.of(facts) if len(facts) else None
    parts = [
        not_started_overdue(facts, p, th, keys),
        stalled(facts, p, th, keys),
        county_behind(inputs.county_progress, inputs.city_progress, p, th),
        return_exceptions(inputs.submissions, inputs.expected_counties, p),
        data_errors(inputs.submissions, inputs.issues, p),
        unexplained_warnings(inputs.submissions, inputs.issues, p),
    ]
    parts = [x for x in parts if len(x)]
    out = pd.concat(parts, ignore_index=True) if parts else empty_exceptions()
    city = (
        inputs.divisions.set_index("county_code")["city_code"]
        if len(inputs.divisions)
        else pd.Series(dtype=object)
    )
    out["city_code"] = out["county_code"].map(city).fillna(out["city_code"]) if len(out) else out["city_code"]
    out = carry_since(out, inputs.prior_exceptions)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out = out.assign(_o=out["category"].map(order)).sort_values(
        ["_o", "county_code", "project_id"], na_position="first"
    )
    log.info("exceptions %s: %s", p, out["category"].value_counts().to_dict())
    return out.drop(columns="_o").reset_index(drop=True)
