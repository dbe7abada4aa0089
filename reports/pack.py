"""The monthly joint-meeting pack (联席会议材料): sections, files, letters, disclosure, manifest.

:func:`compute_pack` is pure (frames in, :class:`PackData` out); :func:`write_pack` renders it to
``out_dir``; :func:`build_pack` does both from a warehouse engine, stores the marts and the
manifest, and says what changed since the last build of the same period.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from markupsafe import Markup

from gaibao.contract import personal_columns
from reports import periods
from reports.chart import county_completion_png
from reports.config import ScoreWeights, Thresholds
from reports.exceptions import (
    CATEGORIES,
    PROJECT_CATEGORIES,
    compute_exceptions,
    county_behind_rule_zh,
    top_rules,
)
from reports.inputs import PackInputs, load_inputs
from reports.ledger import load_pack_ledger
from reports.manifest import (
    Manifest,
    area_figures,
    build_manifest,
    diff_manifests,
    latest_manifest,
    manifest_json,
    store_manifest,
)
from reports.render import DisclosureContext, Figure, LetterContext, PackContext, render
from reports.schema import ensure_tables, mart_exception, mart_scorecard
from reports.scorecard import SCORE_COLUMNS, compute_scorecard
from reports.sections import FORMULA_PREFIXES, Col, Section, html_row_strings
from reports.xlsx import write_workbook

log = logging.getLogger(__name__)

CHART_CID = "county-chart"

# The public disclosure (公示): an allow-list of columns, never personal data nor free text.
DISCLOSURE_COLUMNS: list[Col] = [
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("school_name", "学校名称"),
    Col("project_id", "项目编号"),
    Col("project_type", "项目类别"),
    Col("status", "项目状态"),
    Col("planned_area_m2", "规划面积（平方米）", "num0"),
    Col("completed_area_m2", "竣工面积（平方米）", "num0"),
    Col("planned_invest_wan", "规划投资（万元）", "num2"),
    Col("completed_invest_wan", "完成投资（万元）", "num2"),
    Col("actual_start", "实际开工日期", "date"),
    Col("completed_date", "竣工日期", "date"),
]
assert not {c.key for c in DISCLOSURE_COLUMNS} & personal_columns()


def now_label(tz: str = "Asia/Shanghai") -> str:
    return datetime.now(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def safe_name(text: str) -> str:
    """A file-name part from reference text: CJK, letters, digits, - and _ only."""
    return re.sub(r"[^0-9A-Za-z_\-\u4e00-\u9fff]", "", str(text))[:40]


class NoPackData(ValueError):
    """The warehouse has nothing for the period: there is no pack to build."""


@dataclass
class PackData:
    period: str
    inputs: PackInputs
    exceptions: pd.DataFrame
    scorecard: pd.DataFrame
    headline: Section
    figures: list[Figure]
    county_table: Section
    bottom: Section
    exception_sections: list[Section]
    funding_figures: list[Figure]
    funding_city: Section
    funding_county: Section
    data_quality: Section
    disclosure: Section
    chart_table: pd.DataFrame
    manifest: Manifest
    ledger: Any = None  # reports.ledger.PackLedger (挂帐销号), set by build_pack

    @property
    def label(self) -> str:
        return periods.label_zh(self.period)

    @property
    def county_names(self) -> dict[str, str]:
        d = self.inputs.divisions
        return (
            dict(zip(d["county_code"].astype(str), d["county_name"].astype(str), strict=True))
            if len(d)
            else {}
        )


@dataclass
class LetterFiles:
    county_code: str
    county_name: str
    html: Path
    xlsx: Path


@dataclass
class PackResult:
    period: str
    out_dir: Path
    files: dict[str, Path]
    letters: dict[str, LetterFiles]
    email_html: str
    chart_png: bytes
    pack_digest: str
    changes: list[str]
    exceptions: pd.DataFrame
    scorecard: pd.DataFrame
    exception_counts: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# computing


def _with_names(frame: pd.DataFrame, divisions: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame.assign(county_name=pd.Series(dtype=object), city_name=pd.Series(dtype=object))
    div = divisions[["county_code", "county_name", "city_code", "city_name"]].drop_duplicates("county_code")
    f = frame.drop(columns=[c for c in ("county_name", "city_name") if c in frame.columns])
    if "city_code" in f.columns:
        f = f.drop(columns="city_code")
    out = f.merge(div, on="county_code", how="left")
    out["county_name"] = out["county_name"].fillna(out["county_code"])
    out["city_name"] = out["city_name"].fillna("")
    return out


def _aggregate(cp: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """City (by='city_code') or province (by=None) figures from county rows; rates from the sums."""
    sums = [
        "completed_area_m2",
        "plan_area_m2",
        "started_area_m2",
        "planned_area_m2",
        "completed_equipment_wan",
        "plan_equipment_wan",
    ]
    c = cp.reindex(columns=["city_code", "city_name", "has_return", *sums]).copy()
    for s in sums:
        c[s] = c[s].astype(float)
    c["has_return"] = c["has_return"].fillna(False).astype(bool)
    if by:
        g = c.groupby(["city_code", "city_name"], dropna=False)
        agg = g[sums].sum(min_count=1).reset_index()
        agg["counties_total"] = g.size().to_numpy()
        agg["counties_reporting"] = g["has_return"].sum().to_numpy()
        agg["level"] = "city"
    else:
        agg = pd.DataFrame([c[sums].sum(min_count=1)])
        agg["counties_total"] = len(c)
        agg["counties_reporting"] = int(c["has_return"].sum())
        agg["city_code"], agg["city_name"], agg["level"] = "000000", "全省", "province"
    agg["area_completion_rate"] = agg["completed_area_m2"] / agg["plan_area_m2"].where(
        agg["plan_area_m2"] > 0
    )
    agg["equipment_completion_rate"] = agg["completed_equipment_wan"] / agg["plan_equipment_wan"].where(
        agg["plan_equipment_wan"] > 0
    )
    agg["start_rate"] = agg["started_area_m2"] / agg["planned_area_m2"].where(agg["planned_area_m2"] > 0)
    return agg


def _city_rows(inputs: PackInputs, period: str) -> pd.DataFrame:
    """mart_city_progress rows (province first) for ``period``; computed from counties if absent."""
    cityp = inputs.city_progress
    rows = cityp[cityp["period"] == period] if len(cityp) else cityp
    if len(rows) == 0:
        cp = _with_names(inputs.county_progress[inputs.county_progress["period"] == period], inputs.divisions)
        if cp.empty:
            return pd.DataFrame()
        rows = pd.concat([_aggregate(cp, None), _aggregate(cp, "city_code")], ignore_index=True)
    rows = rows.copy()
    rows["_o"] = (rows["level"] != "province").astype(int)
    rows.loc[rows["level"] == "province", "city_name"] = "全省"
    return rows.sort_values(["_o", "city_code"]).drop(columns="_o").reset_index(drop=True)


def _headline(inputs: PackInputs) -> pd.DataFrame:
    cur = _city_rows(inputs, inputs.period)
    prev = _city_rows(inputs, periods.previous(inputs.period))
    if cur.empty:
        return pd.DataFrame(columns=["city_name"])
    if len(prev):
        p = prev.set_index(["level", "city_code"])
        key = pd.MultiIndex.from_frame(cur[["level", "city_code"]])
        for col in ("area_completion_rate", "equipment_completion_rate", "start_rate"):
            cur[f"{col}_change"] = (
                cur[col].astype(float).to_numpy() - p[col].astype(float).reindex(key).to_numpy()
            )
    else:
        for col in ("area_completion_rate", "equipment_completion_rate", "start_rate"):
            cur[f"{col}_change"] = float("nan")
    cur["reporting"] = [
        f"{int(r)}/{int(t)}" if pd.notna(r) and pd.notna(t) else "—"
        for r, t in zip(
            cur.get("counties_reporting", pd.Series(index=cur.index)),
            cur.get("counties_total", pd.Series(index=cur.index)),
            strict=True,
        )
    ]
    return cur


HEADLINE_COLUMNS = [
    Col("city_name", "地区"),
    Col("completed_area_m2", "竣工面积（平方米）", "num0"),
    Col("plan_area_m2", "五年规划面积（平方米）", "num0"),
    Col("area_completion_rate", "面积完成率", "pct"),
    Col("area_completion_rate_change", "较上月", "pp"),
    Col("start_rate", "开工率", "pct"),
    Col("equipment_completion_rate", "设备购置完成率", "pct"),
    Col("equipment_completion_rate_change", "较上月", "pp"),
    Col("reporting", "报送县区"),
]

COUNTY_COLUMNS = [
    Col("rank_in_province", "全省排名", "int"),
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("county_code", "区划代码"),
    Col("area_completion_rate", "面积完成率", "pct"),
    Col("equipment_completion_rate", "设备购置完成率", "pct"),
    Col("start_rate", "开工率", "pct"),
    Col("completed_area_m2", "竣工面积（平方米）", "num0"),
    Col("score", "得分", "num2"),
    Col("rank_in_city", "市内排名", "int"),
    Col("score_change", "得分较上月", "num2"),
    Col("data_state", "数据情况"),
]

SCORE_DETAIL_COLUMNS = [
    Col("points_area_completion", "面积完成得分", "num2"),
    Col("points_equipment_completion", "设备完成得分", "num2"),
    Col("points_start_rate", "开工率得分", "num2"),
    Col("points_timeliness", "报送及时得分", "num2"),
    Col("points_data_quality", "数据质量得分", "num2"),
    Col("points_overdue_stalled", "逾期停滞项目得分", "num2"),
]

EXCEPTION_PROJECT_COLUMNS = [
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("detail", "情况"),
    Col("since_period", "始于"),
]
EXCEPTION_COUNTY_COLUMNS = [
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("detail", "情况"),
    Col("since_period", "始于"),
]

FUNDING_MONEY_COLUMNS = [
    Col("name", "地区"),
    Col("funds_total_wan", "累计投入（万元）", "num2"),
    Col("funds_rural_infra_wan", "农村学校基础设施（万元）", "num2"),
    Col("funds_urban_wan", "城区学校提升（万元）", "num2"),
    Col("funds_equipment_wan", "设备购置（万元）", "num2"),
    Col("funds_land_wan", "征地及附属物赔偿（万元）", "num2"),
]
FUNDING_TEACHER_COLUMNS = [
    Col("name", "地区"),
    Col("land_mu", "解决教育用地（亩）", "num2"),
    Col("teachers_recruited", "招聘引进教师（人）", "int"),
    Col("teachers_rural", "其中农村及偏远（人）", "int"),
    Col("rural_share", "农村占比", "pct"),
    Col("rural_teacher_subsidy_wan", "乡村教师支持计划年度拨付（万元）", "num2"),
]
# the workbook's funding sheets hold both in one table; the HTML pack shows them as two (A4 width)
FUNDING_COLUMNS = [*FUNDING_MONEY_COLUMNS, *FUNDING_TEACHER_COLUMNS[1:]]
FUNDING_SUMS = [c.key for c in FUNDING_COLUMNS if c.key not in ("name", "rural_share")]

DQ_COLUMNS = [
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("files_received", "收到文件", "int"),
    Col("files_refused", "退回文件", "int"),
    Col("rows_rejected", "拒收行数", "int"),
    Col("warnings_unexplained", "未说明预警", "int"),
    Col("top_rules", "主要问题"),
]


SCORE_PART_ZH = {
    "area_completion": "面积完成",
    "equipment_completion": "设备完成",
    "start_rate": "开工率",
    "timeliness": "报送及时",
    "data_quality": "数据质量",
    "overdue_stalled": "逾期停滞项目",
}


def _points(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def score_note_zh(weights: ScoreWeights) -> str:
    """The ranking table's footnote, from the weights in force (never the defaults' words)."""
    w = weights.weights
    parts = "、".join(f"{SCORE_PART_ZH[k]}{_points(w[k])}" for k in SCORE_PART_ZH if w.get(k, 0) > 0)
    late = (
        f"报送及时一项，逾期报送的报表按{weights.late_fraction * 100:g}%计"
        if w.get("timeliness", 0) > 0
        else ""
    )
    zero = [SCORE_PART_ZH[k] for k in SCORE_PART_ZH if not w.get(k, 0) > 0]
    note = f"得分满分{_points(weights.total)}分：{parts}。"
    if late:
        note += f"{late}。"
    if zero:
        note += f"{'、'.join(zero)}不计分。"
    return note


def _data_state(cp: pd.DataFrame, period: str) -> list[str]:
    out = []
    for has, carried, src in zip(
        cp.get("has_return", pd.Series(False, index=cp.index)),
        cp.get("is_carried_forward", pd.Series(False, index=cp.index)),
        cp.get("source_period", pd.Series(None, index=cp.index)),
        strict=True,
    ):
        if bool(has) if pd.notna(has) else False:
            out.append("本期报送")
        elif (bool(carried) if pd.notna(carried) else False) and isinstance(src, str):
            out.append(f"未报送，沿用{periods.label_zh(src)}数据")
        else:
            out.append("未报送")
    return out


def _funding(inputs: PackInputs) -> tuple[pd.DataFrame, pd.DataFrame, list[Figure]]:
    f = inputs.county_funding
    f = f[f["period"] == inputs.period] if len(f) else f
    f = _with_names(f.reindex(columns=["county_code", *FUNDING_SUMS]), inputs.divisions)
    for s in FUNDING_SUMS:
        f[s] = pd.to_numeric(f[s], errors="coerce")

    def share(df: pd.DataFrame) -> pd.Series:
        return df["teachers_rural"] / df["teachers_recruited"].where(df["teachers_recruited"] > 0)

    county = f.assign(name=f["county_name"], rural_share=share(f)).sort_values(["city_code", "county_code"])
    city = f.groupby(["city_code", "city_name"], dropna=False)[FUNDING_SUMS].sum(min_count=1).reset_index()
    province = pd.DataFrame([f[FUNDING_SUMS].sum(min_count=1)]).assign(city_code="000000", city_name="全省")
    cities = pd.concat([province, city], ignore_index=True)
    cities = cities.assign(name=cities["city_name"], rural_share=share(cities))
    p = cities.iloc[0] if len(cities) else pd.Series(dtype=float)

    def yi(x: float) -> str:
        return "—" if pd.isna(x) else f"{x / 1e4:,.2f}亿元"

    figures = [
        Figure("累计投入资金", yi(p.get("funds_total_wan"))),
        Figure("其中农村学校基础设施", yi(p.get("funds_rural_infra_wan"))),
        Figure("其中城区学校提升", yi(p.get("funds_urban_wan"))),
        Figure("其中设备购置", yi(p.get("funds_equipment_wan"))),
        Figure(
            "征地及附属物赔偿",
            yi(p.get("funds_land_wan")),
            "解决用地" + ("—" if pd.isna(p.get("land_mu")) else f"{p.get('land_mu'):,.0f}亩"),
        ),
        Figure(
            "招聘引进教师",
            "—" if pd.isna(p.get("teachers_recruited")) else f"{p.get('teachers_recruited'):,.0f}人",
            ""
            if pd.isna(p.get("rural_share"))
            else f"其中农村及偏远{p.get('teachers_rural'):,.0f}人（{p.get('rural_share') * 100:.1f}%）",
        ),
        Figure(
            "乡村教师支持计划",
            "—"
            if pd.isna(p.get("rural_teacher_subsidy_wan"))
            else f"{yi(p.get('rural_teacher_subsidy_wan'))}/年",
            "年度拨付，用于提高乡村教师生活待遇",
        ),
    ]
    return cities, county, figures


def current_submission_ids(submissions: pd.DataFrame, period: str) -> set[str]:
    """Per county and kind: the accepted submission, else the latest refused one."""
    if submissions.empty:
        return set()
    s = submissions[(submissions["period"] == period) & submissions["status"].isin(["accepted", "refused"])]
    s = s.assign(_acc=(s["status"] == "accepted").astype(int))
    sort = ["county_code", "kind", "_acc"] + (["received_at"] if "received_at" in s else [])
    s = s.sort_values(sort, kind="stable")
    return set(s.drop_duplicates(["county_code", "kind"], keep="last")["submission_id"].astype(str))


def _data_quality(inputs: PackInputs) -> pd.DataFrame:
    subs = inputs.submissions
    subs = subs[subs["period"] == inputs.period] if len(subs) else subs
    codes = pd.Index(
        sorted(
            set(inputs.expected_counties) | set(subs["county_code"].astype(str))
            if len(subs)
            else inputs.expected_counties
        )
    )
    g = subs.assign(county_code=subs["county_code"].astype(str)).groupby("county_code") if len(subs) else None
    dq = pd.DataFrame(index=codes)
    dq.index.name = "county_code"
    if g is not None:
        dq["files_received"] = g.size().reindex(codes).fillna(0)
        refused = (subs["status"] == "refused").groupby(subs["county_code"].astype(str)).sum()
        dq["files_refused"] = refused.reindex(codes).fillna(0)
        acc = subs[subs["status"] == "accepted"]
        dq["rows_rejected"] = (
            acc.groupby(acc["county_code"].astype(str))["rows_rejected"].sum().reindex(codes).fillna(0)
        )
    else:
        dq["files_received"] = dq["files_refused"] = dq["rows_rejected"] = 0
    current = current_submission_ids(inputs.submissions, inputs.period)
    iss = inputs.issues
    iss = iss[iss["submission_id"].astype(str).isin(current)] if len(iss) else iss
    if len(iss):
        w = iss[(iss["severity"] == "warning") & ~iss["is_explained"].fillna(False).astype(bool)]
        dq["warnings_unexplained"] = w.groupby(w["county_code"].astype(str)).size().reindex(codes).fillna(0)
        e = iss[iss["severity"] == "error"]
        top = top_rules(e.assign(county_code=e["county_code"].astype(str)), key="county_code")
        dq["top_rules"] = top.reindex(codes).fillna("")
    else:
        dq["warnings_unexplained"] = 0
        dq["top_rules"] = ""
    dq = _with_names(dq.reset_index(), inputs.divisions)
    return dq.sort_values(
        ["rows_rejected", "files_refused", "warnings_unexplained", "county_code"],
        ascending=[False, False, False, True],
    )


def _disclosure(inputs: PackInputs) -> pd.DataFrame:
    """This period's projects, allow-listed columns only, in county order (file order within one)."""
    f = inputs.facts
    f = f[(f["period"] == inputs.period).to_numpy()] if len(f) else f
    keep = [c.key for c in DISCLOSURE_COLUMNS if c.key not in ("city_name", "county_name")]
    f = f.reindex(columns=["county_code", *keep]).reset_index(drop=True)
    div = inputs.divisions.drop_duplicates("county_code").set_index("county_code")
    # names looked up once per county, then spread to the rows (≈1,000,000 on a national month)
    codes, uniques = pd.factorize(f["county_code"].astype(str))
    uniq = pd.Series(uniques, dtype=object)
    county_name = uniq.map(div["county_name"]).fillna(uniq).to_numpy(dtype=object)
    city_name = uniq.map(div["city_name"]).fillna("").to_numpy(dtype=object)
    city_code = uniq.map(div["city_code"]).fillna("").astype(str).to_numpy(dtype=object)
    f["county_name"] = county_name[codes] if len(f) else pd.Series(dtype=object)
    f["city_name"] = city_name[codes] if len(f) else pd.Series(dtype=object)
    # stable sort by (city code, county code): rank the distinct counties, then sort the ranks
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[np.lexsort((np.asarray(uniques, dtype=object).astype(str), city_code.astype(str)))] = np.arange(
        len(uniques)
    )
    order = np.argsort(rank[codes], kind="stable") if len(f) else np.arange(0)
    f = f.iloc[order]
    return f[[*(c.key for c in DISCLOSURE_COLUMNS), "county_code"]].reset_index(drop=True)


def headline_figures(prov: pd.Series) -> list[Figure]:
    """The pack's headline figures of one row of the headline (the province's, or a city's on the
    portal's wall chart): completion, area, start and equipment rates, counties reporting."""
    def pct(x: object) -> str:
        return "—" if x is None or pd.isna(x) else f"{float(x) * 100:.1f}%"

    def pp(x: object) -> str:
        return "" if x is None or pd.isna(x) else f"较上月{float(x) * 100:+.1f}个百分点"

    return [
        Figure(
            "校舍改造面积完成率",
            pct(prov.get("area_completion_rate")),
            pp(prov.get("area_completion_rate_change")),
        ),
        Figure(
            "竣工面积",
            "—"
            if pd.isna(prov.get("completed_area_m2", float("nan")))
            else f"{float(prov['completed_area_m2']) / 1e4:,.2f}万㎡",
            ""
            if pd.isna(prov.get("plan_area_m2", float("nan")))
            else f"五年规划{float(prov['plan_area_m2']) / 1e4:,.2f}万㎡",
        ),
        Figure("开工率", pct(prov.get("start_rate")), pp(prov.get("start_rate_change"))),
        Figure(
            "设备购置完成率",
            pct(prov.get("equipment_completion_rate")),
            pp(prov.get("equipment_completion_rate_change")),
        ),
        Figure("报送县区", str(prov.get("reporting", "—"))),
    ]


def compute_pack(inputs: PackInputs, th: Thresholds, weights: ScoreWeights) -> PackData:
    """Every figure and list of the pack, from the inputs (no I/O)."""
    period = inputs.period
    divisions = inputs.divisions
    cp_all = inputs.county_progress
    if not len(cp_all) or not (cp_all["period"] == period).any():
        raise NoPackData(
            f"报告期 {period} 在数据仓库中没有任何县区数据（mart_county_progress 为空），请先导入各县区月报"
        )
    exceptions = compute_exceptions(inputs, th)
    scorecard = compute_scorecard(
        inputs.county_progress, inputs.submissions, exceptions, period, weights, inputs.prior_scorecard
    )
    cp = inputs.county_progress[inputs.county_progress["period"] == period].copy()
    cp["county_code"] = cp["county_code"].astype(str)

    counties = _with_names(cp, divisions).merge(
        scorecard.drop(columns=["county_name", "city_name", "city_code", "period"]),
        on="county_code",
        how="left",
    )
    counties["data_state"] = _data_state(counties, period)
    counties = counties.sort_values(["rank_in_province", "county_code"]).reset_index(drop=True)

    head = _headline(inputs)
    prov = head.iloc[0] if len(head) else pd.Series(dtype=object)

    figures = headline_figures(prov)

    ex = (
        _with_names(exceptions, divisions)
        if len(exceptions)
        else exceptions.assign(county_name=None, city_name=None)
    )
    ex_sections = []
    for cat, title in CATEGORIES.items():
        rows = ex[ex["category"] == cat]
        cols = EXCEPTION_PROJECT_COLUMNS if cat in PROJECT_CATEGORIES else EXCEPTION_COUNTY_COLUMNS
        ex_sections.append(
            Section(
                f"exc_{cat}",
                f"{title}（{len(rows)}）",
                cols,
                rows.reset_index(drop=True),
                note_zh=county_behind_rule_zh(th) if cat == "COUNTY_BEHIND" else "",
                sheet_zh=title,
            )
        )

    bottom = counties.dropna(subset=["score"]).sort_values(["score", "county_code"]).head(th.bottom_n)
    chart_table = counties[
        ["county_code", "county_name", "area_completion_rate", "equipment_completion_rate"]
    ]
    fund_city, fund_county, fund_figures = _funding(inputs)
    inputs_subs = inputs.source_submissions if inputs.source_submissions is not None else pd.DataFrame()
    areas = area_figures(period, inputs.county_progress, head, inputs.county_funding, fund_city)
    manifest = build_manifest(
        period, inputs_subs, inputs.county_progress, scorecard, inputs.county_funding, areas
    )

    return PackData(
        period=period,
        inputs=inputs,
        exceptions=exceptions,
        scorecard=scorecard,
        headline=Section("headline", "全省及各市对照五年规划进展", HEADLINE_COLUMNS, head, sheet_zh="总览"),
        figures=figures,
        county_table=Section(
            "counties",
            "各县区完成率、得分与排名",
            COUNTY_COLUMNS + SCORE_DETAIL_COLUMNS,
            counties,
            note_zh=score_note_zh(weights),
            sheet_zh="县区排名",
        ),
        bottom=Section(
            "bottom",
            f"得分后{th.bottom_n}名县区",
            [c for c in COUNTY_COLUMNS if c.key not in ("completed_area_m2", "data_state")],
            bottom.reset_index(drop=True),
            sheet_zh=f"后{th.bottom_n}名",
        ),
        exception_sections=ex_sections,
        funding_figures=fund_figures,
        funding_city=Section(
            "funding", "资金投入与师资补充（按市）", FUNDING_COLUMNS, fund_city, sheet_zh="资金与师资"
        ),
        funding_county=Section(
            "funding_county",
            "资金投入与师资补充（按县区）",
            [Col("city_name", "市"), *FUNDING_COLUMNS],
            fund_county,
            sheet_zh="资金与师资（县区）",
        ),
        data_quality=Section(
            "data_quality",
            "数据质量：各县区报送与核查情况",
            DQ_COLUMNS,
            _data_quality(inputs).reset_index(drop=True),
            sheet_zh="数据质量",
        ),
        disclosure=Section(
            "disclosure", "全面改薄项目进展公示", DISCLOSURE_COLUMNS, _disclosure(inputs), sheet_zh="公示"
        ),
        chart_table=chart_table,
        manifest=manifest,
    )


# ---------------------------------------------------------------------------------------------
# letters


LETTER_EXC_COLUMNS = [
    Col("category_zh", "类别"),
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("detail", "情况"),
    Col("since_period", "始于"),
]
LETTER_ROW_COLUMNS = [
    Col("kind_zh", "报表"),
    Col("file_name", "文件"),
    Col("row_number", "行号", "int"),
    Col("project_id", "项目编号"),
    Col("column_zh", "列"),
    Col("value", "填报值"),
    Col("rule", "规则"),
    Col("message", "问题及处理办法"),
]


def _issue_rows(issues: pd.DataFrame, submissions: pd.DataFrame) -> pd.DataFrame:
    from gaibao.contract import KIND_NAME_ZH, label_zh

    if issues.empty:
        return issues.assign(kind_zh=None, file_name=None, column_zh=None)
    names = (
        submissions.set_index("submission_id")["file_name"]
        if "file_name" in submissions and len(submissions)
        else pd.Series(dtype=object)
    )
    out = issues.assign(
        kind_zh=issues["kind"].map(KIND_NAME_ZH).fillna(issues["kind"]),
        file_name=issues["submission_id"].map(names),
        column_zh=[
            label_zh(k, c) if isinstance(c, str) else None
            for k, c in zip(issues["kind"], issues["column_name"], strict=True)
        ],
    )
    return out.sort_values(["kind", "row_number"], na_position="first")


def letter_sections(data: PackData) -> dict[str, tuple[LetterContext, list[Section]]]:
    """Per county: the letter context and its XLSX sections (only that county's rows)."""
    inputs = data.inputs
    period = data.period
    current = current_submission_ids(inputs.submissions, period)
    iss = inputs.issues
    iss = iss[iss["submission_id"].astype(str).isin(current)] if len(iss) else iss
    rejected = (
        _issue_rows(iss[iss["severity"] == "error"], inputs.submissions)
        if len(iss)
        else _issue_rows(iss, inputs.submissions)
    )
    warns = (
        iss[(iss["severity"] == "warning") & ~iss["is_explained"].fillna(False).astype(bool)]
        if len(iss)
        else iss
    )
    warns = _issue_rows(warns, inputs.submissions)
    exc = data.exceptions.assign(category_zh=data.exceptions["category"].map(CATEGORIES))
    by_exc = dict(tuple(exc.groupby("county_code"))) if len(exc) else {}
    by_rej = dict(tuple(rejected.groupby(rejected["county_code"].astype(str)))) if len(rejected) else {}
    by_warn = dict(tuple(warns.groupby(warns["county_code"].astype(str)))) if len(warns) else {}
    sc = data.scorecard.set_index("county_code") if len(data.scorecard) else pd.DataFrame()
    cp = inputs.county_progress
    cp = (
        cp[cp["period"] == period]
        .assign(county_code=lambda d: d["county_code"].astype(str))
        .set_index("county_code")
        if len(cp)
        else pd.DataFrame()
    )
    names = data.county_names
    codes = sorted(set(inputs.expected_counties) | set(by_exc) | set(by_rej) | set(by_warn))
    generated = now_label()
    out = {}
    empty_exc = exc.iloc[0:0]
    for code in codes:
        name = names.get(code, code)
        s_exc = Section(
            "exceptions",
            "本县区异常事项",
            LETTER_EXC_COLUMNS,
            by_exc.get(code, empty_exc).reset_index(drop=True),
            sheet_zh="异常事项",
        )
        s_rej = Section(
            "rejected",
            "被拒收的数据行（请更正后重新报送）",
            LETTER_ROW_COLUMNS,
            by_rej.get(code, rejected.iloc[0:0]).reset_index(drop=True),
            sheet_zh="被拒收的行",
        )
        s_warn = Section(
            "warnings",
            "未说明的预警（请核实；属实的在备注列说明）",
            LETTER_ROW_COLUMNS,
            by_warn.get(code, warns.iloc[0:0]).reset_index(drop=True),
            sheet_zh="未说明的预警",
        )
        summary = []
        if code in cp.index:
            r = cp.loc[code]
            summary += [
                Figure("面积完成率", _pct(r.get("area_completion_rate"))),
                Figure("设备购置完成率", _pct(r.get("equipment_completion_rate"))),
                Figure("开工率", _pct(r.get("start_rate"))),
            ]
        if code in sc.index:
            r = sc.loc[code]
            summary.append(
                Figure(
                    "得分",
                    f"{float(r['score']):.1f}",
                    f"全市第{int(r['rank_in_city'])}名，全省第{int(r['rank_in_province'])}名",
                )
            )
        summary.append(Figure("待处理事项", f"{len(s_exc.frame) + len(s_rej.frame) + len(s_warn.frame)}项"))
        ctx = LetterContext(
            title=f"{name}全面改薄月报核查通知（{data.label}）",
            county_name=name,
            period_label=data.label,
            generated_at=generated,
            summary=summary,
            exceptions=s_exc,
            rejected=s_rej,
            warnings=s_warn,
            ledger=data.ledger.county(code) if data.ledger is not None else None,
        )
        out[code] = (ctx, [s_exc, s_rej, s_warn, *(ctx.ledger.sections if ctx.ledger else [])])
    return out


def _pct(x: object) -> str:
    return "—" if x is None or pd.isna(x) else f"{float(x) * 100:.1f}%"


# ---------------------------------------------------------------------------------------------
# writing


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# The HTML pack's tables fit an A4 portrait page (794 px) without sideways scrolling: the ranking
# and the score parts are two tables there, and so are money and teachers (the workbook keeps
# each as one sheet, and the 区划代码).
COUNTY_HTML_COLUMNS = [c for c in COUNTY_COLUMNS if c.key != "county_code"]
SCORE_PARTS_HTML_COLUMNS = [Col("rank_in_province", "全省排名", "int"), Col("county_name", "县（区）")] + [
    Col(c.key, c.header_zh.replace("得分", ""), c.fmt) for c in SCORE_DETAIL_COLUMNS
]


def html_views(data: PackData) -> dict[str, Section]:
    """The sections the HTML pack shows in place of the workbook's wide ones."""
    counties = data.county_table
    funding = data.funding_city
    return {
        "county_table": Section(
            counties.key,
            counties.title_zh,
            COUNTY_HTML_COLUMNS,
            counties.frame,
            note_zh=counties.note_zh,
        ),
        "score_parts": Section(
            "score_parts",
            "各县区得分构成（分）",
            SCORE_PARTS_HTML_COLUMNS,
            counties.frame,
            note_zh="各项得分之和即得分；区划代码与全部分项见附件工作簿“县区排名”表。",
        ),
        "funding": Section("funding", "资金投入（按市）", FUNDING_MONEY_COLUMNS, funding.frame),
        "funding_teachers": Section(
            "funding_teachers",
            "教育用地、师资补充与乡村教师支持计划（按市）",
            FUNDING_TEACHER_COLUMNS,
            funding.frame,
        ),
    }


def pack_context(data: PackData, chart_src: str, changes: list[str], list_limit: int) -> PackContext:
    counts = [(CATEGORIES[c], int((data.exceptions["category"] == c).sum())) for c in CATEGORIES]
    views = html_views(data)
    return PackContext(
        title=f"全面改薄联席会议材料（{data.label}）",
        period_label=data.label,
        generated_at=now_label(),
        chart_src=chart_src,
        figures=data.figures,
        headline=data.headline,
        county_table=views["county_table"],
        score_parts=views["score_parts"],
        bottom=data.bottom,
        exception_counts=counts,
        exception_sections=data.exception_sections,
        funding_figures=data.funding_figures,
        funding=views["funding"],
        funding_teachers=views["funding_teachers"],
        data_quality=data.data_quality,
        list_limit=list_limit,
        pack_digest=data.manifest.pack_digest,
        changes=changes,
        ledger=data.ledger.pack() if data.ledger is not None else None,
    )


def pack_file_names(period: str) -> dict[str, str]:
    label = periods.label_zh(period)
    return {
        "html": f"全面改薄联席会议材料{label}.html",
        "xlsx": f"全面改薄联席会议材料{label}.xlsx",
        "chart": f"县区完成情况图{label}.png",
        "disclosure_csv": f"全面改薄项目进展公示{label}.csv",
        "disclosure_html": f"全面改薄项目进展公示{label}.html",
        "exceptions_csv": f"全面改薄异常清单{label}.csv",
        "manifest": "manifest.json",
    }


def _capped(section: Section, limit: int) -> Section:
    if section.n_rows <= limit:
        return section
    note = f"共{section.n_rows}条，工作簿列出前{limit}条；完整清单见同目录的异常清单CSV文件。"
    return Section(
        section.key,
        section.title_zh,
        section.columns,
        section.frame.head(limit),
        note_zh=note,
        sheet_zh=section.sheet_zh,
    )


EXCEPTION_CSV_COLUMNS = [
    Col("category_zh", "类别"),
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("county_code", "区划代码"),
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("detail", "情况"),
    Col("since_period", "始于"),
]


def write_exceptions_csv(data: PackData, path: Path) -> None:
    """Every exception of the period in one CSV (the workbook caps each list)."""
    exc = data.exceptions
    frame = (
        _with_names(exc, data.inputs.divisions) if len(exc) else exc.assign(county_name=None, city_name=None)
    )
    frame = frame.assign(category_zh=frame["category"].map(CATEGORIES))
    write_section_csv(
        Section("exceptions", "异常清单", EXCEPTION_CSV_COLUMNS, frame.reset_index(drop=True)), path
    )


_FORMULA_FIRST = pa.array(list(FORMULA_PREFIXES))  # each is one character


def write_section_csv(section: Section, path: Path) -> None:
    """A section as CSV (UTF-8 with BOM for Excel), formula-looking text made inert with ``'``.

    Vectorised in Arrow (the 公示 of a national month is ≈1,000,000 rows).
    """
    frame = section.frame
    arrays: list[pa.Array] = []
    for c in section.columns:
        col = frame[c.key]
        if c.fmt == "text":
            text = pa.array(col.astype("string"), type=pa.string(), from_pandas=True)
            # a formula start (FORMULA_PREFIXES), without a regex: one of them as the first character
            first = pc.utf8_slice_codeunits(text, 0, 1)
            risky = pc.is_in(first, value_set=_FORMULA_FIRST)
            arrays.append(pc.if_else(risky, pc.binary_join_element_wise("'", text, ""), text))
        elif c.fmt == "date":
            stamps = pd.to_datetime(col, errors="coerce")
            if getattr(stamps.dt, "tz", None) is not None:
                stamps = stamps.dt.tz_localize(None)  # the wall-clock date, as strftime gave
            days = pa.array(stamps, from_pandas=True).cast(pa.date32())
            arrays.append(days.cast(pa.string()))  # ISO: YYYY-MM-DD
        else:
            numbers = pd.to_numeric(col, errors="coerce").astype(float).round(2)
            arrays.append(pa.array(numbers.to_numpy(), type=pa.float64(), from_pandas=True))
    table = pa.Table.from_arrays(arrays, names=[c.header_zh for c in section.columns])
    with path.open("wb") as fh:
        fh.write("\ufeff".encode())  # BOM: Excel then reads the CSV as UTF-8
        pacsv.write_csv(table, fh)


INLINE_DISCLOSURE_ROWS = 5000  # up to this many projects the index page holds the whole table too


def write_disclosure_html(data: PackData, out_dir: Path, index_path: Path, pages: bool = True) -> list[Path]:
    """The 公示 as HTML: an index page and (``pages``) one page per county under ``公示/``.

    Up to INLINE_DISCLOSURE_ROWS projects the index holds the whole table as well.
    """
    section = data.disclosure
    inline = len(section.frame) <= INLINE_DISCLOSURE_ROWS
    if not (pages or inline):
        section = Section(section.key, section.title_zh, section.columns, section.frame.iloc[0:0])
    rows = html_row_strings(section)
    folder = out_dir / "公示"
    folder.mkdir(parents=True, exist_ok=True)
    names = data.county_names
    codes = section.frame["county_code"].astype(str).to_numpy()
    row_list = rows.tolist()
    done_by_county = (section.frame["status"] == "已竣工").groupby(codes).sum()
    links: list[tuple[str, str, str]] = []
    written = []
    generated = now_label()
    if pages and len(codes):
        # one slice of the row strings per county (no per-group DataFrames: 2,850 of them are slow)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        ends = np.r_[starts[1:], len(sorted_codes)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            code = str(sorted_codes[start])
            name = names.get(code, code)
            file = folder / f"{safe_name(code)}_{safe_name(name)}.html"
            body = "\n".join(row_list[i] for i in order[start:end].tolist())
            ctx = DisclosureContext(
                title=f"{name}全面改薄项目进展公示（{data.label}）",
                period_label=data.label,
                generated_at=generated,
                heading=f"{name}项目清单（{end - start}个）",
                headers=section.headers,
                rows_html=Markup(body),
            )
            file.write_text(render("disclosure.html", ctx), encoding="utf-8")
            written.append(file)
            links.append(
                (
                    name,
                    f"公示/{file.name}",
                    f"项目{end - start}个，已竣工{int(done_by_county.get(code, 0))}个",
                )
            )
    index = DisclosureContext(
        title=f"全面改薄项目进展公示（{data.label}）",
        period_label=data.label,
        generated_at=generated,
        heading=f"全部项目（{len(data.disclosure.frame)}个）",
        headers=section.headers,
        rows_html=Markup("\n".join(row_list)) if inline else Markup(""),
        links=links,
    )
    index_path.write_text(render("disclosure.html", index), encoding="utf-8")
    return [index_path, *written]


def write_county_outputs(data: PackData, out_dir: Path, disclosure_index: Path) -> dict[str, LetterFiles]:
    """The per-county outputs: each county's 公示 page (with the index) and its letter."""
    write_disclosure_html(data, out_dir, disclosure_index, pages=True)
    return write_letters(data, out_dir)


def write_letters(data: PackData, out_dir: Path) -> dict[str, LetterFiles]:
    """Each county's letter (HTML + XLSX) under ``out_dir/letters/``."""
    letter_dir = out_dir / "letters"
    letter_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, LetterFiles] = {}
    for code, (ctx, secs) in letter_sections(data).items():
        base = f"{safe_name(code)}_{safe_name(ctx.county_name)}_全面改薄核查通知{data.label}"
        html_path, xlsx_path = letter_dir / f"{base}.html", letter_dir / f"{base}.xlsx"
        html_path.write_text(render("letter.html", ctx), encoding="utf-8")
        write_workbook(xlsx_path, secs, title_zh=ctx.title)
        files[code] = LetterFiles(code, ctx.county_name, html_path, xlsx_path)
    return files


def write_pack(
    data: PackData, out_dir: Path, changes: list[str], th: Thresholds, letters: bool = True
) -> PackResult:
    """Render the pack and the 公示 into ``out_dir``; with ``letters``, the per-county outputs too
    (each county's letter and its 公示 page)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = pack_file_names(data.period)
    files = {k: out_dir / v for k, v in names.items()}
    png = county_completion_png(data.chart_table, f"各县区校舍改造面积完成率（{data.label}）")
    files["chart"].write_bytes(png)
    html_saved = render("pack.html", pack_context(data, data_uri(png), changes, th.html_list_limit))
    files["html"].write_text(html_saved, encoding="utf-8")
    email_html = render("pack.html", pack_context(data, f"cid:{CHART_CID}", changes, th.html_list_limit))
    sections = [
        data.headline,
        data.county_table,
        data.bottom,
        *(_capped(s, th.xlsx_list_limit) for s in data.exception_sections),
        data.funding_city,
        data.funding_county,
        data.data_quality,
        *(data.ledger.pack().sections if data.ledger is not None else []),
    ]
    write_exceptions_csv(data, files["exceptions_csv"])
    write_workbook(
        files["xlsx"], sections, images={"完成情况图": png}, title_zh=f"全面改薄联席会议材料（{data.label}）"
    )
    write_section_csv(data.disclosure, files["disclosure_csv"])
    if not letters:
        write_disclosure_html(data, out_dir, files["disclosure_html"], pages=False)
    files["manifest"].write_text(manifest_json(data.manifest), encoding="utf-8")
    letter_files = write_county_outputs(data, out_dir, files["disclosure_html"]) if letters else {}
    counts = data.exceptions["category"].value_counts().to_dict() if len(data.exceptions) else {}
    log.info("pack %s written to %s (%d letters)", data.period, out_dir, len(letter_files))
    return PackResult(
        period=data.period,
        out_dir=out_dir,
        files=files,
        letters=letter_files,
        email_html=email_html,
        chart_png=png,
        pack_digest=data.manifest.pack_digest,
        changes=changes,
        exceptions=data.exceptions,
        scorecard=data.scorecard,
        exception_counts={k: int(v) for k, v in counts.items()},
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of Python values, missing values as None (column-wise: ≈100,000 rows)."""
    names = [str(c) for c in frame.columns]
    columns = [frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def store_marts(engine: sa.Engine, period: str, exceptions: pd.DataFrame, scorecard: pd.DataFrame) -> None:
    """Replace the period's rows of mart_exception and mart_scorecard (one transaction)."""
    ensure_tables(engine)
    exc_rows = _records(exceptions)
    sc_rows = _records(scorecard[SCORE_COLUMNS])
    with engine.begin() as conn:
        conn.execute(mart_exception.delete().where(mart_exception.c.period == period))
        conn.execute(mart_scorecard.delete().where(mart_scorecard.c.period == period))
        if exc_rows:
            conn.execute(mart_exception.insert(), exc_rows)
        if sc_rows:
            conn.execute(mart_scorecard.insert(), sc_rows)


def build_pack(
    warehouse: Any,
    period: str,
    out_dir: Path,
    th: Thresholds,
    weights: ScoreWeights,
    letters: bool = True,
) -> PackResult:
    """Read the warehouse (a ``Warehouse`` or an engine), compute, store marts and manifest, write files."""
    periods.check_period(period)
    engine: sa.Engine = warehouse if isinstance(warehouse, sa.Engine) else warehouse.engine
    ensure_tables(engine)
    inputs = load_inputs(warehouse, period, th.history_periods)
    data = compute_pack(inputs, th, weights)
    data.ledger = load_pack_ledger(engine, period)
    previous = latest_manifest(engine, period)
    changes = diff_manifests(previous, data.manifest, data.county_names)
    if previous is not None and not changes:
        log.info("pack %s: same submissions and figures as the last build", period)
    store_marts(engine, period, data.exceptions, data.scorecard)
    result = write_pack(data, out_dir, changes, th, letters=letters)
    store_manifest(engine, data.manifest, str(out_dir))
    return result
